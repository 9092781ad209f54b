"""``python -m mmoe_annotated.serve --model PATH``: the scoring service under uvicorn.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``).

``PATH`` is an export folder written by ``mm.export`` (verified before anything loads) or a
checkpoint file (verified, then exported in memory). The service binds ``127.0.0.1`` unless
``--host`` says otherwise; ``--port 0`` takes a free port. Once it listens it prints one line,
``serving KIND (RUNTIME, CHECKSUM) on http://HOST:PORT``, on standard output. SIGTERM or Ctrl-C
stop it cleanly: requests in flight are answered, and it exits with status 0. A file that does
not verify stops it before it listens, with the reason and exit status 2.
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

from .manifest import ExportError
from .service import MAX_BODY_BYTES, MAX_ROWS


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m mmoe_annotated.serve",
                                 description="Score raw rows over HTTP with an exported mmoe_annotated model.")
    ap.add_argument("--model", required=True, help="an export folder (mm.export) or a checkpoint file")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 takes a free one)")
    ap.add_argument("--runtime", choices=("onnx", "torch"), default=None,
                    help="onnxruntime or the torch.export program (default: onnx when the export holds it)")
    ap.add_argument("--max-rows", type=int, default=MAX_ROWS, help=f"rows per request (default {MAX_ROWS})")
    ap.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                    help=f"bytes per request body (default {MAX_BODY_BYTES})")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads of one scoring call (torch.set_num_threads, onnxruntime's intra-op threads)")
    ap.add_argument("--scoring-threads", type=int, default=1, help="requests scored at once (default 1)")
    ap.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    args = ap.parse_args(argv)
    for name in ("max_rows", "max_body_bytes", "scoring_threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    if not 0 <= args.port < 65536:
        ap.error("--port must be in [0, 65535]")
    return args


def load(args: argparse.Namespace):
    """The verified model of ``--model``: an export folder, or a checkpoint exported in memory."""
    from .load import from_checkpoint, load_export
    path = Path(args.model)
    if path.is_file():
        return from_checkpoint(path, args.runtime, threads=args.threads)
    return load_export(path, args.runtime, threads=args.threads)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import uvicorn
        from .service import make_app
    except ImportError as exc:
        print(f"mmoe_annotated.serve: the service needs starlette and uvicorn ({exc}): "
              "pip install 'mmoe-annotated[serve]'", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        model = load(args)
    except (ExportError, ImportError, OSError, ValueError) as exc:  # CheckpointError is a ValueError too
        print(f"mmoe_annotated.serve: not serving: {exc}", file=sys.stderr)
        return 2
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        # IPPROTO_TCP named, so that asyncio sets TCP_NODELAY on each connection: otherwise a reply
        # written in two parts (headers, body) waits for the client's delayed ACK, about 40 ms.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as exc:
        print(f"mmoe_annotated.serve: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    app = make_app(model, max_rows=args.max_rows, max_body_bytes=args.max_body_bytes,
                   scoring_threads=args.scoring_threads)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False,
                                           timeout_graceful_shutdown=10))
    # uvicorn stops gracefully on SIGTERM and SIGINT, then raises the signal again with the handler
    # it found: with this one, that second delivery only asks again for the stop under way, and the
    # process exits with status 0 (a signal before uvicorn's handlers are in place stops it too).
    def stop(*_):
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"serving {model.kind} ({model.runtime}, {model.checksum[:12]}) on http://{url_host}:{port}", flush=True)
    server.run(sockets=[sock])
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
