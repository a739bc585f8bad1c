#!/usr/bin/env python3
"""Train a prior on your own volumes: one GPU (or CPU), or several GPUs/nodes with torchrun.

Examples (a folder of NIfTI files, or DICOM series folders):

    # one GPU
    python scripts/train_prior.py --data /data/ct/*.nii.gz --output priors/my-ct --config configs/train_chest_ct.yaml

    # four GPUs on one machine (DistributedDataParallel; the global batch is split over the ranks)
    python scripts/train_prior.py --gpus 4 --data /data/ct/*.nii.gz --output priors/my-ct

    # two nodes with four GPUs each: run on every node with its --node-rank
    python scripts/train_prior.py --gpus 4 --nodes 2 --node-rank 0 --master-addr 10.0.0.1 --data ... --output ...

This script only builds and runs the `medrecon train` (or `torchrun ... medrecon.cli train`) command,
printing it first; the model card records it. Continue an interrupted run with --resume.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys


def main() -> int:
    p = argparse.ArgumentParser(description="Train a medrecon prior (single process or torchrun).")
    p.add_argument("--data", nargs="+", required=True, help="NIfTI files, DICOM folders, or phantoms/chest-ct/brain-mri")
    p.add_argument("--output", required=True, help="prior directory to write")
    p.add_argument("--config", default="configs/train_chest_ct.yaml", help="training recipe")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per node (0: one process, CPU or the first GPU)")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank")
    p.add_argument("--master-addr", default="127.0.0.1", help="address of node 0")
    p.add_argument("--master-port", type=int, default=29500, help="port on node 0")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the command without running it")
    args, extra = p.parse_known_args()

    train = ["train", "--config", args.config, "--data", *args.data, "--output", args.output, *extra]
    if args.resume:
        train.append("--resume")
    if args.gpus > 1 or args.nodes > 1:
        # one node: --standalone picks a free rendezvous port; several: node 0's address and port
        where = (["--standalone"] if args.nodes == 1 else
                 [f"--nnodes={args.nodes}", f"--node_rank={args.node_rank}",
                  f"--master_addr={args.master_addr}", f"--master_port={args.master_port}"])
        cmd = [sys.executable, "-m", "torch.distributed.run", *where,
               f"--nproc_per_node={max(args.gpus, 1)}", "-m", "medrecon.cli", *train, "--device", "cuda"]
    else:
        cmd = [sys.executable, "-m", "medrecon.cli", *train]
    print(" ".join(shlex.quote(c) for c in cmd))
    return 0 if args.dry_run else subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
