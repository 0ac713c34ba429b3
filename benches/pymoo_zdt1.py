"""pymoo's NSGA-II on ZDT1 (population 100, 250 generations, SBX and PM with eta 20), seeds 1-5:
mean seconds per run and mean hypervolume (reference 1.1, 1.1). The peer for Fog's NSGA-II."""
import time

from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.optimize import minimize
from pymoo.problems import get_problem

problem = get_problem("zdt1", n_var=30)
indicator = HV(ref_point=[1.1, 1.1])
times, volumes = [], []
for seed in range(1, 6):
    algorithm = NSGA2(pop_size=100, crossover=SBX(prob=0.9, eta=20), mutation=PM(eta=20))
    started = time.perf_counter()
    result = minimize(problem, algorithm, ("n_gen", 250), seed=seed, verbose=False)
    times.append(time.perf_counter() - started)
    volumes.append(indicator(result.F))
print(f"pymoo nsga2 zdt1: mean {1000 * sum(times) / len(times):.1f} ms per run, "
      f"mean hypervolume {sum(volumes) / len(volumes):.4f} (seeds 1-5)")
