//! What the device is doing: battery, power, heat, load, network and the user, behind a trait so
//! tests (and devices with their own power daemons) can script the readings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One reading of the device's sensors. `None` means the sensor does not exist here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reading {
    /// Battery charge in [0, 1]; `None` when the device has no battery.
    pub battery: Option<f64>,
    /// Whether it is charging or on mains power.
    pub charging: bool,
    /// Hottest CPU sensor, °C.
    pub cpu_temp_c: Option<f64>,
    /// Whole-system CPU utilisation in [0, 1].
    pub cpu_load: f64,
    /// Share of memory in use, [0, 1].
    pub mem_used: f64,
    /// CPU cores.
    pub cpus: usize,
    /// Memory, MiB.
    pub mem_total_mb: f64,
    /// Whether the network is metered (mobile data, a capped link).
    pub metered: bool,
    /// Seconds since the user last used the device; `None` when unknown.
    pub user_idle_s: Option<f64>,
}

impl Default for Reading {
    fn default() -> Self {
        Reading {
            battery: None,
            charging: true,
            cpu_temp_c: None,
            cpu_load: 0.0,
            mem_used: 0.0,
            cpus: 1,
            mem_total_mb: 1024.0,
            metered: false,
            user_idle_s: None,
        }
    }
}

/// A source of readings.
pub trait Sensors: Send {
    /// Read every sensor now.
    fn read(&mut self) -> Reading;
}

/// The machine's own sensors on Linux: sysinfo for CPU, memory and temperatures;
/// `/sys/class/power_supply` for battery and power; the default route's interface for a mobile
/// (metered) link; systemd-logind's idle hint for the user.
pub struct LinuxSensors {
    system: sysinfo::System,
    components: sysinfo::Components,
    power_supply: PathBuf,
    /// Used when no sensor says whether the network is metered.
    pub assume_metered: bool,
}

impl std::fmt::Debug for LinuxSensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxSensors")
            .field("power_supply", &self.power_supply)
            .finish_non_exhaustive()
    }
}

impl Default for LinuxSensors {
    fn default() -> Self {
        LinuxSensors::new()
    }
}

impl LinuxSensors {
    /// Sensors of this machine.
    pub fn new() -> LinuxSensors {
        let mut system = sysinfo::System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        LinuxSensors {
            system,
            components: sysinfo::Components::new_with_refreshed_list(),
            power_supply: PathBuf::from("/sys/class/power_supply"),
            assume_metered: false,
        }
    }
}

/// Battery charge and whether the device is charging or on mains, from a power_supply directory.
pub fn read_power_supply(dir: &Path) -> (Option<f64>, bool) {
    let read = |path: PathBuf| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut battery: Option<f64> = None;
    let mut charging = false;
    let mut mains = false;
    let mut any = false;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            any = true;
            match read(path.join("type")).as_deref() {
                Some("Battery") => {
                    if let Some(capacity) =
                        read(path.join("capacity")).and_then(|c| c.parse::<f64>().ok())
                    {
                        battery = Some(
                            battery.map_or(capacity / 100.0, |b: f64| b.min(capacity / 100.0)),
                        );
                    }
                    if matches!(
                        read(path.join("status")).as_deref(),
                        Some("Charging" | "Full" | "Not charging")
                    ) {
                        charging = true;
                    }
                }
                Some("Mains" | "USB") => mains |= read(path.join("online")).as_deref() == Some("1"),
                _ => {}
            }
        }
    }
    // No battery at all: a mains-powered machine.
    let on_power = charging || mains || battery.is_none() || !any;
    (battery, on_power)
}

/// Whether the default route leaves through a mobile-data interface (wwan*, ww*), from
/// `/proc/net/route`.
pub fn default_route_is_mobile(route_table: &str) -> bool {
    route_table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 1 && fields[1] == "00000000" && fields[0].starts_with("ww")
    })
}

/// Seconds since the user was last active, from systemd-logind's idle hint; `None` when there
/// is no logind or no user session (a headless server).
fn logind_idle_seconds() -> Option<f64> {
    let sessions = std::process::Command::new("loginctl")
        .args(["list-sessions", "--no-legend"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&sessions.stdout).into_owned();
    let mut idle: Option<f64> = None;
    for session in text.lines().filter_map(|l| l.split_whitespace().next()) {
        let out = std::process::Command::new("loginctl")
            .args([
                "show-session",
                session,
                "-p",
                "IdleHint",
                "-p",
                "IdleSinceHintMonotonic",
            ])
            .output()
            .ok()?;
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let hint = out
            .lines()
            .find_map(|l| l.strip_prefix("IdleHint="))
            .unwrap_or("no");
        let since_us: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("IdleSinceHintMonotonic="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let seconds = if hint == "yes" && since_us > 0.0 {
            let uptime: f64 = std::fs::read_to_string("/proc/uptime")
                .ok()
                .and_then(|u| u.split_whitespace().next().and_then(|v| v.parse().ok()))
                .unwrap_or(0.0);
            (uptime - since_us / 1e6).max(0.0)
        } else {
            0.0
        };
        idle = Some(idle.map_or(seconds, |i: f64| i.min(seconds)));
    }
    idle
}

impl Sensors for LinuxSensors {
    fn read(&mut self) -> Reading {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.components.refresh(false);
        let (battery, charging) = read_power_supply(&self.power_supply);
        let cpu_temp_c = self
            .components
            .iter()
            .filter_map(|c| c.temperature().map(f64::from))
            .filter(|t| t.is_finite())
            .fold(None, |hottest: Option<f64>, t| {
                Some(hottest.map_or(t, |h| h.max(t)))
            });
        let total = self.system.total_memory().max(1) as f64;
        let mobile =
            std::fs::read_to_string("/proc/net/route").is_ok_and(|t| default_route_is_mobile(&t));
        Reading {
            battery,
            charging,
            cpu_temp_c,
            cpu_load: f64::from(self.system.global_cpu_usage()) / 100.0,
            mem_used: self.system.used_memory() as f64 / total,
            cpus: self.system.cpus().len().max(1),
            mem_total_mb: total / (1024.0 * 1024.0),
            metered: mobile || self.assume_metered,
            user_idle_s: logind_idle_seconds(),
        }
    }
}

/// Readings from a JSON file, re-read every time: for tests, and for devices whose power and
/// thermal state come from a daemon of their own. A missing or unreadable file reads as the
/// defaults (mains power, idle unknown).
#[derive(Debug, Clone)]
pub struct FileSensors {
    path: PathBuf,
}

impl FileSensors {
    /// Sensors read from `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileSensors {
        FileSensors { path: path.into() }
    }
}

impl Sensors for FileSensors {
    fn read(&mut self) -> Reading {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }
}

/// Readings from a closure, for unit tests.
pub struct ScriptedSensors<F: FnMut() -> Reading + Send>(pub F);

impl<F: FnMut() -> Reading + Send> std::fmt::Debug for ScriptedSensors<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptedSensors")
    }
}

impl<F: FnMut() -> Reading + Send> Sensors for ScriptedSensors<F> {
    fn read(&mut self) -> Reading {
        (self.0)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supply(dir: &Path, name: &str, files: &[(&str, &str)]) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (file, value) in files {
            std::fs::write(d.join(file), format!("{value}\n")).unwrap();
        }
    }

    #[test]
    fn power_supplies_are_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_power_supply(dir.path()),
            (None, true),
            "no supply: mains"
        );
        supply(
            dir.path(),
            "BAT0",
            &[
                ("type", "Battery"),
                ("capacity", "57"),
                ("status", "Discharging"),
            ],
        );
        supply(dir.path(), "AC", &[("type", "Mains"), ("online", "0")]);
        assert_eq!(read_power_supply(dir.path()), (Some(0.57), false));
        supply(dir.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        assert_eq!(read_power_supply(dir.path()), (Some(0.57), true));
    }

    #[test]
    fn mobile_default_routes_are_metered() {
        let header = "Iface\tDestination\tGateway\tFlags\n";
        assert!(default_route_is_mobile(&format!(
            "{header}wwan0\t00000000\t0101A8C0\t0003\n"
        )));
        assert!(!default_route_is_mobile(&format!(
            "{header}eth0\t00000000\t0101A8C0\t0003\nwwan0\t0000A8C0\t0\t1\n"
        )));
    }

    #[test]
    fn the_machines_own_sensors_are_read() {
        let reading = LinuxSensors::new().read();
        // What this machine reports, for the record (CI machines have no battery: mains power).
        eprintln!("sensors of this machine: {reading:?}");
        assert!(reading.cpus >= 1);
        assert!((0.0..=1.0).contains(&reading.mem_used));
        assert!(reading.mem_total_mb > 0.0);
        if reading.battery.is_none() {
            assert!(reading.charging, "no battery is treated as mains power");
        }
    }
}
