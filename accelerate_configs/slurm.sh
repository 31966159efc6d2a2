#!/usr/bin/env bash
# Multi-node training under SLURM: one `accelerate launch` per node, which starts one process per
# GPU; node 0 is the rendezvous host.
#   sbatch --nodes=2 accelerate_configs/slurm.sh recipes/code-llama-4/scout-lora-zero3-8gpu.yaml [KEY=VALUE ...]
#SBATCH --job-name=finetune
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --output=runs/slurm-%j.log
set -euo pipefail

RECIPE=${1:?usage: sbatch --nodes=N accelerate_configs/slurm.sh RECIPE [KEY=VALUE ...]}
shift
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/multi_node_zero3.yaml}
MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}

# srun starts this once per node; SLURM_NODEID becomes accelerate's machine rank.
srun --kill-on-bad-exit=1 bash -c "
  .venv/bin/accelerate launch --config_file $CONFIG \
    --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID --main_process_ip $MAIN_HOST --main_process_port $MAIN_PORT \
    -m finetune train $RECIPE $*
"
