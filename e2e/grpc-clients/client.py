"""A proxyless gRPC client (grpcio, gRPC C-core) for the end-to-end tests.

Reads its xDS bootstrap from GRPC_XDS_BOOTSTRAP (written by the harness), dials xds:///TARGET, and
calls the unary METHOD (raw bytes, no schema) one call at a time, one every --interval-ms, each with
a deadline. Writes one JSON line per call to stdout:
  {"ok": true, "body": "us-east1-b", "backend": "us-east1-b-0", "ms": 3}
  {"ok": false, "code": "UNAVAILABLE", "error": "...", "ms": 1}
Stops by itself after --max-seconds, or when stdout is closed (the harness went away). Once the
--stop-file exists it makes no more calls, prints {"stopped": true} once, and stays up with its channel
(so its xDS and load-report streams live on) until --max-seconds or killed.
"""

import argparse
import json
import os
import sys
import time

import grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="e.g. xds:///echo.demo:8080")
    parser.add_argument("--method", default="/e2e.Echo/Who")
    parser.add_argument("--interval-ms", type=int, default=20)
    parser.add_argument("--deadline-ms", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--stop-file", default="")
    args = parser.parse_args()
    if not os.environ.get("GRPC_XDS_BOOTSTRAP"):
        print("client.py: GRPC_XDS_BOOTSTRAP is not set", file=sys.stderr)
        return 2

    channel = grpc.insecure_channel(args.target)
    # No serializers: the request and the answer are raw bytes.
    call = channel.unary_unary(args.method)
    interval = args.interval_ms / 1000.0
    stop_at = time.monotonic() + args.max_seconds
    next_at = time.monotonic()
    while time.monotonic() < stop_at:
        if args.stop_file and os.path.exists(args.stop_file):
            try:
                print(json.dumps({"stopped": True}), flush=True)
            except BrokenPipeError:
                return 0
            time.sleep(max(0.0, stop_at - time.monotonic()))
            break
        started = time.monotonic()
        try:
            body, state = call.with_call(b"", timeout=args.deadline_ms / 1000.0)
            headers = dict(state.initial_metadata() or ())
            line = {
                "ok": True,
                "body": body.decode("utf-8", "replace"),
                "backend": headers.get("x-backend", ""),
            }
        except grpc.RpcError as e:
            line = {"ok": False, "code": e.code().name, "error": e.details() or ""}
        line["ms"] = round((time.monotonic() - started) * 1000)
        try:
            print(json.dumps(line), flush=True)
        except BrokenPipeError:
            return 0
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
        # After a call longer than the interval, go on from now instead of bursting to catch up.
        next_at = max(next_at, time.monotonic())
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
