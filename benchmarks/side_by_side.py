"""What the side-by-side benchmarks share: peak memory of one step, and one Llama-vs-HuLlama row of a table.

Each measurement runs in a fresh subprocess (the script itself with `--_one kind:setting`), so that the peak of one
model never shows in another's.
"""

import json
import resource
import statistics
import subprocess
import sys
import time

import torch

HEADER = f"{'llama tok/s':>12} {'hullama tok/s':>14} {'speed ratio':>12} {'llama MiB':>10} {'hullama MiB':>12} " \
         f"{'memory ratio':>13}"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def peak_of_step(step, device: torch.device) -> tuple[float, float]:
    """Run `step` once: (peak MiB it adds over what was resident before, MiB resident before).

    CUDA: torch's peak allocated bytes; CPU: the growth of the process's peak resident memory."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return (torch.cuda.max_memory_allocated() - base) / 2**20, base / 2**20
    base = rss_kib()
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, base / 1024


def median_seconds(step, repeats: int) -> float:
    """The median wall time of `repeats` calls of `step` (which synchronises the device itself)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_row(script: str, child_args: list[str], setting: str, label: str) -> dict:
    """Measure Llama and HuLlama for one setting in subprocesses, print one table row, return it with ratios."""
    row = {}
    for kind in ("llama", "hullama"):
        done = subprocess.run([sys.executable, script, *child_args, "--_one", f"{kind}:{setting}"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{kind} ({setting}) failed:\n{done.stderr[-3000:]}")
        row[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    row["speed_ratio"] = row["hullama"]["tokens_per_s"] / row["llama"]["tokens_per_s"]
    row["memory_ratio"] = row["hullama"]["peak_mib"] / max(row["llama"]["peak_mib"], 1e-9)
    print(f"{label} {row['llama']['tokens_per_s']:>12.0f} {row['hullama']['tokens_per_s']:>14.0f} "
          f"{row['speed_ratio']:>11.2f}x {row['llama']['peak_mib']:>10.0f} {row['hullama']['peak_mib']:>12.0f} "
          f"{row['memory_ratio']:>12.2f}x", flush=True)
    return row
