"""Stress the end of 2-process CPU runs: launch the same gloo run N times under CPU load and count the aborts.

    python benchmarks/multiprocess_exit.py minimal                      # 20 runs of a small gloo script
    python benchmarks/multiprocess_exit.py minimal --variant none       # ... that leaves teardown to exit
    python benchmarks/multiprocess_exit.py rl --runs 10                 # tests/dist_check.py rl, 2 steps
    python benchmarks/multiprocess_exit.py sft --runs 10 --set data.num_workers=1
    python benchmarks/multiprocess_exit.py rl --script /tmp/old_dist_check.py   # another worker script
    python benchmarks/multiprocess_exit.py minimal --variant none --gdb # the aborting thread's backtrace

Every run is the launch the tests use (`accelerate launch --multi_gpu --num_processes 2`, ACCELERATE_USE_CPU=1,
gloo), while --load busy loops (niced by --nice) keep the cores busy, as on a loaded CI machine. Each run
prints its exit code, which rank died with which signal and whether it said "terminate called without an
active exception"; the logs of failed runs are kept under --work/logs.

Targets:
- minimal: this file as the worker: Accelerator(), a DDP-wrapped Linear with a few backward passes
  (--no-ddp to skip), all_reduce and gather_object calls, then the end chosen by --variant:
    shutdown              drop the model, then videor1.distributed.shutdown(accelerator) (tests/dist_check.py)
    shutdown-held         shutdown() while the DDP model is still referenced (it warns)
    barrier-destroy       accelerator.wait_for_everyone(); destroy_process_group(), the model still referenced
                          (the old tests/dist_check.py, whose trainer was alive to the end)
    drop-barrier-destroy  drop the model, accelerator.free_memory(), gc, then barrier + destroy
    destroy               drop the model, destroy_process_group() without a barrier
    none                  drop the model, nothing else: interpreter shutdown tears the group down
    rank0-first           barrier-destroy, then rank 1 sleeps 2 s, so rank 0 exits while rank 1 still runs
    shutdown-rank0-first  shutdown(), then the same sleep on rank 1
- rl / sft: --script (tests/dist_check.py) on a tiny Qwen2.5-VL and synthetic data (built once under --work),
  with the configs of tests/test_train.py::test_two_cpu_processes_train_together_and_stay_identical and
  tests/test_sft.py::test_two_cpu_processes_fine_tune_together; --set adds config overrides. A run also
  fails if its report does not hold two ranks with equal checksums.

--starve-gloo widens the race the abort needs: in every launched rank a sitecustomize hook renices gloo's
worker threads (pt_gloo_runloop) to 19, so under --load a worker that has just finished a collective waits
long for the CPU before it drops that collective's tensors (which takes the GIL).

--core lets the ranks dump core (RLIMIT_CORE unlimited; needs kernel.core_pattern = "core", as in this
container): after a failed run all threads' backtraces go to the logs and the aborting thread's is printed.
It changes no timing, so it catches the abort as often as a plain run does.

--gdb starts the two ranks without the launcher (rank 0 then hosts the TCPStore), each under
`gdb -batch -ex run -ex 'thread apply all bt'`, and prints the backtrace of the thread that got SIGABRT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["shutdown", "shutdown-held", "barrier-destroy", "drop-barrier-destroy", "destroy", "none", "rank0-first",
            "shutdown-rank0-first"]
ABORT = "terminate called without an active exception"
# torchrun's failure summary: "rank : 1 (local_rank: 1)" then "exitcode : -6 (pid: 123)  (SIGABRT)"
RANK_LINE = re.compile(r"^\s*rank\s*:\s*(\d+) \(local_rank.*\n\s*exitcode\s*:\s*(-?\d+)", re.M)


# ---- the minimal worker (runs inside each launched process) --------------------------------------------------
def worker(variant: str, ddp: bool) -> None:
    """A few collectives like a training run's, then the end of run chosen by `variant`."""
    import gc

    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    accelerator = Accelerator()
    rank = accelerator.process_index
    held = []  # the trainers' models are DDP-wrapped: the wrapper keeps the process group referenced
    if ddp:
        held.append(accelerator.prepare(torch.nn.Linear(16, 16)))
        for _ in range(3):
            accelerator.backward(held[0](torch.randn(4, 16)).square().mean())
    total = torch.full((64,), float(rank + 1))
    for _ in range(5):
        torch.distributed.all_reduce(total)
    report = gather_object([{"rank": rank, "total": float(total.sum())}])
    assert len(report) == accelerator.num_processes
    if variant not in ("barrier-destroy", "shutdown-held", "rank0-first"):
        held.clear()  # as tests/dist_check.py drops its trainer before the end
    if variant == "drop-barrier-destroy":  # what shutdown does, less the torch.distributed.nn.functional fix
        accelerator.free_memory()
        gc.collect()
    if variant.startswith("shutdown"):
        from videor1.distributed import shutdown

        shutdown(accelerator)
    elif variant.endswith("barrier-destroy") or variant == "rank0-first":
        accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    elif variant == "destroy":
        torch.distributed.destroy_process_group()
    if variant.endswith("rank0-first") and rank == 1:
        time.sleep(2)


# ---- --starve-gloo: a sitecustomize that deprioritises gloo's worker threads in each rank ------------------------
STARVE = """\
import os, threading, time

def _starve():  # renice every gloo worker thread of this rank to 19 (Linux: one task per thread)
    done, deadline = set(), time.monotonic() + 120
    while len(done) < 2 and time.monotonic() < deadline:
        for tid in os.listdir("/proc/self/task"):
            try:
                name = open(f"/proc/self/task/{tid}/comm").read().strip()
                if name == "pt_gloo_runloop" and tid not in done:
                    os.setpriority(os.PRIO_PROCESS, int(tid), 19)
                    done.add(tid)
            except OSError:
                pass
        time.sleep(0.02)

if "RANK" in os.environ and "LOCAL_RANK" in os.environ:  # a launched rank, not the launcher
    threading.Thread(target=_starve, name="starve-gloo", daemon=True).start()
"""


def starve_hook(work: Path) -> Path:
    """A folder holding the sitecustomize above, to put first on the ranks' PYTHONPATH."""
    folder = work / "starve-gloo"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(STARVE)
    return folder


# ---- one launch ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env(extra: list[str]) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path,
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.update(item.split("=", 1) for item in extra)
    return env


def launch(argv: list[str], env: dict[str, str], timeout: float, core: bool = False) -> subprocess.CompletedProcess:
    """`accelerate launch` of `argv` (a script and its arguments) as two gloo processes, as tests/launch.py does."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *argv]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
                              preexec_fn=allow_core if core else None)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(command, 124, out, err + f"\n[timed out after {timeout:.0f} s]")


def allow_core() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def core_backtrace(logs: Path, run: int) -> str:
    """The backtrace of the aborting thread in a rank's core file (kept in the logs); the core is removed."""
    core = ROOT / "core"
    if not core.exists():
        return ""
    out = subprocess.run(["gdb", "-q", "-batch", "-ex", "thread apply all bt 30", sys.executable, str(core)],
                         capture_output=True, text=True).stdout
    core.unlink()  # hundreds of MB, and it sits in the repository root
    (logs / f"core.run{run}.txt").write_text(out)
    current = out.split("\nThread 1 ", 1)[-1]  # the thread that received the signal is thread 1 of a core
    return "\n".join(line for line in current.splitlines() if line.startswith("#"))


def rank_outcomes(stderr: str) -> dict[int, str]:
    """Which rank ended how, from torchrun's failure summary."""
    outcomes = {}
    for rank, code in RANK_LINE.findall(stderr):
        code = int(code)
        if code < 0:
            name = signal.Signals(-code).name
            outcomes[int(rank)] = f"{name} (stopped by the launcher)" if name == "SIGTERM" else name
        else:
            outcomes[int(rank)] = f"exit {code}"
    return outcomes


def describe(result: subprocess.CompletedProcess, report_problem: str | None) -> str:
    if result.returncode == 0 and report_problem is None:
        return "ok"
    parts = [f"{r}: {what}" for r, what in sorted(rank_outcomes(result.stderr).items())]
    if ABORT in result.stderr or ABORT in result.stdout:
        parts.append(f'"{ABORT}" x{(result.stderr + result.stdout).count(ABORT)}')
    if "address already in use" in result.stderr.lower():
        parts.append("rendezvous port taken")
    if result.returncode == 124:
        parts.append("timed out")
    if report_problem:
        parts.append(report_problem)
    if parts:
        return "; ".join(parts)
    tail = result.stderr.strip().splitlines()
    return tail[-1] if tail else "failed"


# ---- real runs: data, model and configs as the tests build them ------------------------------------------------
def prepare_assets(work: Path) -> tuple[Path, Path]:
    """A synthetic dataset and a tiny Qwen2.5-VL, built once under `work` (as tests/conftest.py builds them)."""
    from videor1.data.synthetic import generate
    from videor1.models.tiny import build_tiny, dataset_corpus

    data, model = work / "synth", work / "qwen2_5_vl"
    if not (data / "train.json").exists():
        generate(data, n=24, n_test=8, seed=1)
    if not (model / "config.json").exists():
        build_tiny(model, family="qwen2_5_vl", corpus=dataset_corpus(data / "train.json"))
    return data, model


def write_config(target: str, run_dir: Path, model: Path, data: Path, overrides: list[str]) -> Path:
    """The two-process test's config for `target`, with `overrides`, saved under run_dir."""
    sys.path.insert(0, str(ROOT))  # tests.* by module path, as the tests themselves import it
    from videor1.config import save_config

    if target == "rl":
        from tests.test_train import TOY_REWARD, config

        cfg = config(run_dir, model, data, "max_steps=2", f'rewards=[{{name: "{TOY_REWARD}"}}]',
                     "algorithm.temporal=false", "algorithm.kl_coef=0", "generation.max_new_tokens=24", *overrides)
    else:
        from tests.test_sft import sft_config

        cfg = sft_config(run_dir, model, data, "max_steps=2", "save_every=2", *overrides)
    save_config(cfg, run_dir / "config.yaml")
    return run_dir / "config.yaml"


def check_report(path: Path) -> str | None:
    """None when the report holds two ranks that both trained to the same weights."""
    try:
        ranks = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"no report ({type(exc).__name__})"
    if len(ranks) != 2 or not all(r.get("changed") for r in ranks) or ranks[0]["checksum"] != ranks[1]["checksum"]:
        return f"bad report {ranks}"
    return None


# ---- gdb: each rank under the debugger, no launcher ---------------------------------------------------------------
def gdb_run(argv: list[str], env: dict[str, str], logs: Path, timeout: float) -> str:
    """Both ranks under gdb; the backtrace of the thread that received SIGABRT, if one did."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        log = open(logs / f"gdb-rank{rank}.log", "w")
        command = ["gdb", "-q", "-batch", "-ex", "set pagination off", "-ex", "handle SIGPIPE nostop noprint",
                   "-ex", "run", "-ex", "info threads", "-ex", "thread apply all bt", "--args", sys.executable, *argv]
        procs.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=rank_env, cwd=ROOT), log))
    for proc, log in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    found = []
    for rank in (0, 1):
        text = (logs / f"gdb-rank{rank}.log").read_text(errors="replace")
        hit = re.search(r'Thread (\d+) "([^"]*)" received signal SIGABRT', text)
        if hit:
            thread = re.search(rf"\nThread {hit.group(1)} \(.*?\):\n(.*?)(?:\n\n|\Z)", text, re.S)
            found.append(f"rank {rank}: thread {hit.group(1)} '{hit.group(2)}' got SIGABRT\n"
                         + (thread.group(1) if thread else "(no backtrace)"))
    return "\n\n".join(found)


# ---- load --------------------------------------------------------------------------------------------------------
def start_load(count: int, nice: int) -> list[subprocess.Popen]:
    """`count` busy loops at niceness `nice`: the other jobs of a loaded CI machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.nice(nice))
            for _ in range(count)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


# ---- main ----------------------------------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":  # inside a launched process
        worker(sys.argv[2], ddp=sys.argv[3] == "ddp")
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["minimal", "rl", "sft"])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--variant", choices=VARIANTS, default="shutdown", help="minimal: how the run ends")
    parser.add_argument("--no-ddp", action="store_true", help="minimal: no DDP-wrapped model")
    parser.add_argument("--script", default="tests/dist_check.py", help="rl/sft: the worker script")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="rl/sft: config override")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="worker environment, e.g. PYTHONFAULTHANDLER=1 or TORCH_DISTRIBUTED_DEBUG=DETAIL")
    parser.add_argument("--load", type=int, default=2, help="busy-loop processes while the runs go (0: none)")
    parser.add_argument("--nice", type=int, default=5, help="niceness of the busy loops")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
    parser.add_argument("--starve-gloo", action="store_true", help="renice gloo's worker threads to 19 in each rank")
    parser.add_argument("--core", action="store_true", help="let the ranks dump core; print the aborting thread")
    parser.add_argument("--gdb", action="store_true", help="run each rank under gdb, without the launcher")
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "videor1-multiprocess-exit")
    args = parser.parse_args()

    work = args.work.resolve()
    logs = work / "logs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    env = worker_env(args.env)
    if args.starve_gloo:
        env["PYTHONPATH"] = os.pathsep.join([str(starve_hook(work)), env["PYTHONPATH"]])
    if args.target != "minimal":
        data, model = prepare_assets(work)
    label = f"{args.target}/{args.variant}{'' if args.no_ddp else '+ddp'}" if args.target == "minimal" else (
        f"{args.target} {args.script} {' '.join(args.set)}".strip())
    label += " --starve-gloo" if args.starve_gloo else ""
    print(f"{label}: {args.runs} runs, {args.load} busy loops at nice {args.nice}, logs in {logs}", flush=True)

    load = start_load(args.load, args.nice)
    failures, seconds = 0, []
    try:
        for i in range(1, args.runs + 1):
            run_dir = work / "runs" / f"{args.target}-{i}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            if args.target == "minimal":
                argv = [str(Path(__file__).resolve()), "_worker", args.variant, "none" if args.no_ddp else "ddp"]
            else:
                config = write_config(args.target, run_dir, model, data, args.set)
                argv = [args.script, args.target, str(run_dir / "report.json"), str(config)]
            start = time.perf_counter()
            if args.gdb:
                trace = gdb_run(argv, env, logs, args.timeout)
                seconds.append(time.perf_counter() - start)
                failures += bool(trace)
                print(f"run {i:3d}/{args.runs}  {seconds[-1]:6.1f} s  " + (trace or "no SIGABRT"), flush=True)
                if trace and args.stop_on_failure:
                    break
                continue
            result = launch(argv, env, args.timeout, core=args.core)
            seconds.append(time.perf_counter() - start)
            problem = check_report(run_dir / "report.json") if args.target != "minimal" else None
            failed = result.returncode != 0 or problem is not None
            failures += failed
            print(f"run {i:3d}/{args.runs}  rc={result.returncode:<4d} {seconds[-1]:6.1f} s  "
                  f"{describe(result, problem)}", flush=True)
            trace = core_backtrace(logs, i) if args.core else ""
            if trace:
                print(trace, flush=True)
            if failed:
                (logs / f"run{i}.log").write_text(f"$ {' '.join(result.args)}\n--- stdout\n{result.stdout}\n"
                                                  f"--- stderr\n{result.stderr}")
                if args.stop_on_failure:
                    break
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        stop_load(load)
    print(f"{label}: {failures}/{len(seconds)} runs failed; {statistics.median(seconds):.1f} s median per run, "
          f"{sum(seconds):.0f} s in all", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
