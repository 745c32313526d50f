"""Launch a test script as two gloo processes on the CPU, the way `accelerate launch` starts a real run."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable


def _run_bounded(command: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    """Run the launcher in its own process group; past `timeout` kill it and its workers, and fail the test.

    A deadlocked collective would otherwise hang CI, and killing only the launcher would leave its worker
    processes spinning in gloo for ever.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(process)
        stdout, stderr = process.communicate()
        script = next(part for part in command if part.startswith("tests/"))
        raise AssertionError(f"{script} did not finish in {timeout} s (a deadlock?):\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def launch_two_cpu_processes(script: str, *args: object, timeout: int = 600) -> None:
    """`accelerate launch --multi_gpu --num_processes 2` of tests/`script` on the CPU; fails with its stderr."""
    # the scripts import tests.* and toy rewards by module path, from the repository root
    path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    for attempt in range(2):
        with socket.socket() as sock:  # a free rendezvous port, so back-to-back launches never collide
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # accelerate's --cpu launcher starts one process; torchrun-style launching with ACCELERATE_USE_CPU gives gloo
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(port), f"tests/{script}", *map(str, args)]
        result = _run_bounded(command, env, timeout)
        # the port can be taken between our probe and torchrun's bind: that one race is retried, nothing else
        if result.returncode == 0 or "address already in use" not in result.stderr.lower() or attempt:
            break
    assert result.returncode == 0, result.stderr[-3000:]


def launch_and_kill(script: str, *args: object, when: Callable[[], bool], timeout: int = 300) -> None:
    """Launch tests/`script` on two CPU processes and kill -9 the whole run as soon as `when()` holds."""
    path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), f"tests/{script}", *map(str, args)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not when():
            assert process.poll() is None, f"the run ended before it could be killed:\n{process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"tests/{script}: the moment to kill never came in {timeout} s"
            time.sleep(0.005)
    finally:
        _kill_tree(process)
        process.communicate()


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """SIGKILL a launcher and every worker it started (torchrun gives them sessions of their own)."""
    import psutil  # accelerate's dependency

    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    os.killpg(process.pid, signal.SIGKILL)
