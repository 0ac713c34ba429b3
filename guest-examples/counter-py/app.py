"""counter-py: a Fog app in Python that keeps a visit count in `wasi:keyvalue`.

GET / says hello; POST /count adds one to the count and returns it; GET /count returns it.
The count lives in the app's key-value state, so every request and every replica sees the same
number.
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import atomics, store
from wit_world.imports.types import (
    Fields,
    Method_Post,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


def route(post: bool, path: str) -> tuple[int, str]:
    if path == "/":
        return 200, "Hello from Python on Fog\n"
    if path == "/count":
        bucket = store.open("")
        if post:
            visits = atomics.increment(bucket, "visits", 1)
        else:
            # `increment` stores the number as decimal text.
            visits = int(bucket.get("visits") or b"0")
        return 200, f"count {visits}\n"
    return 404, f"nothing at {path}\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = (request.path_with_query() or "/").split("?", 1)[0]
        status, text = route(isinstance(request.method(), Method_Post), path)
        response = OutgoingResponse(
            Fields.from_list([("content-type", b"text/plain; charset=utf-8")])
        )
        response.set_status_code(status)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)
