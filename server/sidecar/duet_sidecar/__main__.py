"""`python3 -m duet_sidecar --model DIR [--backend torch|ttnn] [--port 0] ...`

Loads the target, listens on host:port (0 = any free port) and prints one JSON line
{"event": "listening", "host", "port", "protocol"} on stdout once it is ready to serve:
the gateway's supervisor waits for that line. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from . import PROTOCOL_VERSION


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="duet_sidecar", description="duet verifier sidecar (see server/sidecar/README.md)")
    ap.add_argument("--model", required=True, help="HF model directory: config.json, *.safetensors, tokenizer.json")
    ap.add_argument("--backend", choices=["torch", "ttnn"], default="torch")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; expose deliberately)")
    ap.add_argument("--port", type=int, default=0, help="TCP port, 0 = any free port (printed on stdout)")
    ap.add_argument("--device", default="auto", help="torch: auto | cpu | cuda | cuda:N")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="torch compute dtype; auto = float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--max-batch", type=int, default=32, help="most sessions in one verify_batch")
    ap.add_argument("--max-sessions", type=int, default=64, help="KV slots (open sessions)")
    ap.add_argument("--max-context", type=int, default=2048, help="tokens per session")
    ap.add_argument("--max-draft", type=int, default=64, help="most draft tokens in one verify block")
    ap.add_argument("--prefill-chunk", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default; on a CPU in bfloat16/float16: one per core)")
    ap.add_argument("--ttnn-mesh", default="N150", help="ttnn: MESH_DEVICE (N150, N300, T3K)")
    ap.add_argument("--ttnn-trace", action="store_true", help="ttnn: capture/replay the decode trace for one-row-per-session steps (faster; verify on your build first)")
    ap.add_argument("--ttnn-verify", default="auto", choices=["auto", "single-decode"],
                    help="ttnn: auto = the start-up self-test decides whether the one-step split-update verify is used; single-decode = always k+1 decode steps")
    ap.add_argument("--ttnn-precision", default="performance", choices=["performance", "accuracy"], help="ttnn: tt_transformers' DecodersPrecision")
    ap.add_argument("--ttnn-dram-gib", type=float, default=12.0, help="ttnn: usable DRAM per chip for the start-up budget check (Wormhole: 12)")
    ap.add_argument("--ttnn-self-test-only", action="store_true", help="ttnn: load, run the self-test, print its JSON on stdout and exit (0 = split-update passed)")
    return ap.parse_args(argv)


def watch_parent(on_exit=lambda: os._exit(0)) -> None:
    """Exit when the process that spawned us is gone (a supervising gateway that crashed)."""
    import threading

    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                on_exit()

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


def release_and_exit(server, runner, timeout_s: float = 10.0) -> None:
    """Release the device (ttnn: close the mesh, reset the fabric), then exit. The close runs on
    the model thread after the op in flight, never beside it; a wedged op gets timeout_s."""
    close = getattr(runner, "close", None)
    if close is not None:
        try:
            server.model_thread.submit(close).result(timeout=timeout_s)
        except Exception as e:  # exiting anyway: say why the device may not have been released
            print(f"duet_sidecar: device close failed or timed out ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    from .config import ConfigError, load_config

    try:
        cfg = load_config(a.model)  # before importing torch: a wrong --model fails in milliseconds
    except ConfigError as e:
        print(f"duet_sidecar: {e}", file=sys.stderr, flush=True)
        return 2
    exit_hook = [lambda: os._exit(0)]  # until the device is open: nothing to release
    if os.environ.get("DUET_SIDECAR_EXIT_WITH_PARENT"):
        watch_parent(lambda: exit_hook[0]())

    def on_signal(*_):
        # unwind the main thread instead of working inside the handler (it may have interrupted a
        # lock holder): a runner being built closes its device on the way out, a serving sidecar
        # releases it in the `finally` around serve_forever
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    import torch

    from .engine import Engine
    from .server import SidecarServer

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    max_context = min(a.max_context, cfg.max_position_embeddings)
    if a.backend == "torch":
        from .safetensors_io import load_dir
        from .torch_llama import TorchLlama

        device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
        dtype_name = a.dtype if a.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
        dt = getattr(torch, dtype_name)
        if a.threads <= 0 and device == "cpu" and dtype_name != "float32":
            # float32 matmuls run on OpenBLAS's own threads (one per core); bfloat16/float16 ones
            # run oneDNN on torch's, which can start at 1 (this project's box: 1 of 2 cores).
            # One per usable core there: a 1B x 2-layer bf16 decode step 25.8 -> 17.8 ms
            torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
        kv_bytes = 2 * cfg.num_layers * (a.max_sessions + 1) * cfg.num_kv_heads * max_context * cfg.head_dim * torch.tensor([], dtype=dt).element_size()
        print(f"duet_sidecar: KV cache {kv_bytes / 2**30:.2f} GiB ({a.max_sessions} sessions x {max_context} tokens, {dtype_name})", file=sys.stderr, flush=True)
        try:
            runner = TorchLlama(cfg, load_dir(a.model), device=device, dtype=dt, max_slots=a.max_sessions + 1, max_context=max_context)
        except RuntimeError as e:  # allocation failures: say which knobs shrink it
            print(f"duet_sidecar: cannot allocate the model + KV cache ({e}); lower --max-sessions or --max-context, or use --dtype bfloat16", file=sys.stderr, flush=True)
            return 3
        dev_name = "cpu" if device == "cpu" else f"{device} {torch.cuda.get_device_name(torch.device(device))}"
        device_desc = f"torch {torch.__version__} {dev_name} {dtype_name}"
        max_batch = a.max_batch
    else:
        from .ttnn_backend import TtnnConfigError, TtnnRunner, TtnnUnavailableError

        try:
            runner = TtnnRunner(a.model, cfg, max_batch=a.max_batch, max_context=max_context, mesh=a.ttnn_mesh,
                                max_sessions=a.max_sessions, enable_trace=a.ttnn_trace, verify=a.ttnn_verify,
                                precision=a.ttnn_precision, dram_gib=a.ttnn_dram_gib)
        except (TtnnConfigError, TtnnUnavailableError) as e:
            print(f"duet_sidecar: {e}", file=sys.stderr, flush=True)
            return 2
        if a.ttnn_self_test_only:
            print(json.dumps({"verifyPath": runner.verify_path, "selfTest": runner.self_test}), flush=True)
            runner.close()
            return 0 if runner.verify_path == "split-update" else 1
        device_desc = runner.device_desc
        max_batch = runner.max_batch
        a.prefill_chunk = max_context  # tt_transformers chunks long prompts itself
    engine = Engine(runner, max_batch=max_batch, max_draft=a.max_draft, prefill_chunk=a.prefill_chunk)
    name = os.path.basename(os.path.normpath(a.model))
    info = {"backend": a.backend, "model": name, "vocabSize": cfg.vocab_size, "maxContext": max_context,
            "maxBatch": max_batch, "maxSessions": runner.max_slots - 1, "maxDraft": a.max_draft, "device": device_desc,
            "eosTokenIds": list(cfg.eos_token_ids)}
    if a.backend == "ttnn":  # which verify the start-up self-test chose, and why (README)
        info.update(verifyPath=runner.verify_path, selfTest=runner.self_test)
    server = SidecarServer(engine, info, tokenizer_path=os.path.join(a.model, "tokenizer.json"))
    exit_hook[0] = lambda: release_and_exit(server, runner)
    host, port = server.listen(a.host, a.port)
    print(f"duet_sidecar: {name} on {device_desc}, loaded in {time.time() - t0:.1f} s, listening on {host}:{port}", file=sys.stderr, flush=True)
    print(json.dumps({"event": "listening", "host": host, "port": port, "protocol": PROTOCOL_VERSION}), flush=True)
    try:
        server.serve_forever()
    finally:
        exit_hook[0]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
