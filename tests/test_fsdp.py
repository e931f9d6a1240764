"""HuLlama sharded with FSDP (torch's fully_shard on every decoder layer and the root, as accelerate's FSDP2 with
TRANSFORMER_BASED_WRAP shards it) on two CPU processes (gloo, full precision), stepping the streaming schedule as the
trainer does (StateCarrier attached: the carried states entered inside the forward): the loss and every gradient,
the learned initial state and the recurrence included, equal one unsharded process's. accelerate enables FSDP on GPUs
only, so on the CPU the sharding is applied directly; train/accelerate/fsdp_qlora.yaml is the GPU launch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
    from conftest import perturb_state_modules, tiny_hullama_config
    from modeling_hullama import HuLlamaForCausalLM
    from hullama.train.schedule import StateCarrier

    def build():
        torch.manual_seed(0)
        return perturb_state_modules(HuLlamaForCausalLM(tiny_hullama_config(state_mechanism="gate")))

    def two_steps(model, ids, authors):
        # two streaming steps of one block per author, the state carried (and its last step re-run) in between
        carrier = StateCarrier(learn_recurrence=True)
        carrier.attach(model.model)
        losses = []
        for step in range(2):
            chunk = ids[:, step : step + 1]
            carrier.next_chunks(authors, torch.full_like(authors, step))
            out = model(chunk, labels=chunk)
            carrier.keep(authors, carrier.entered, out)
            losses.append(out.loss)
        return losses[0] + losses[1]  # the first step's gradient reaches U0, the second's the re-run recurrence

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ids = torch.randint(2, 500, (4, 2, 12), generator=torch.Generator().manual_seed(1))
    sharded = build()
    for layer in sharded.model.layers:
        fully_shard(layer)
    fully_shard(sharded)
    mine = slice(2 * rank, 2 * rank + 2)
    two_steps(sharded, ids[mine], torch.arange(4)[mine]).backward()
    grads = {n: p.grad.full_tensor() for n, p in sharded.named_parameters() if p.grad is not None}
    if rank == 0:
        reference = build()
        loss = (two_steps(reference, ids[:2], torch.arange(2)) + two_steps(reference, ids[2:], torch.arange(2, 4))) / 2
        loss.backward()
        expected = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
        report = {"names": sorted(grads), "expected_names": sorted(expected),
                  "max_difference": {n: float((grads[n] - expected[n]).abs().max()) for n in expected if n in grads},
                  "scale": {n: float(expected[n].abs().max()) for n in expected}}
        with open(sys.argv[2], "w") as f:
            json.dump(report, f)
    dist.barrier()  # rank 1 waits for rank 0's reference: a process group torn down unevenly can abort
    dist.destroy_process_group()
    # gloo's threads can still be joinable when the interpreter's C++ destructors run ("terminate called without an
    # active exception", exit -6, seen under load): everything is written, so leave without them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
    """
)


def test_fsdp_sharded_streaming_steps_match_one_unsharded_process(tmp_path):
    script = tmp_path / "fsdp_worker.py"
    script.write_text(WORKER)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29577", str(script), str(ROOT), str(tmp_path / "report.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["names"] == report["expected_names"]
    for name in ("model.author_state.initial_state", "model.author_state.state_to_state.weight",
                 "model.author_state.summary_to_state.weight", "model.author_state.state_to_residual.weight"):
        assert report["scale"][name] > 0, name  # the states entered inside the forward get their gradients
    for name, difference in report["max_difference"].items():
        assert difference <= 1e-5 + 1e-4 * report["scale"][name], (name, difference)
