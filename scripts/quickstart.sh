#!/usr/bin/env bash
# The main job end to end, offline, on a CPU: a real base model, training data built from this
# machine's own Python sources and ShareGPT, a trained EAGLE-3 head, and the benchmark table.
# Every step skips work it already finished, so a second run reuses data, features and checkpoints.
#
#   bash scripts/quickstart.sh            # the default recipe: ~1 h of data + training, then the benchmark
#   bash scripts/quickstart.sh --quick    # minutes: a tiny recipe, to see every step run
#   bash scripts/quickstart.sh --full     # twice the data: benchmarks/*-bf16-full-recipe.json (~2 h)
#   bash scripts/quickstart.sh --full --epochs 5   # train that head on from where it stopped (~70 min more)
#   bash scripts/quickstart.sh --large    # 4x the default data, ShareGPT's own answers too: the issue-5 head (~2 h)
#
# EAGLE_MODEL (default qwen2.5-coder-0.5b) and EAGLE_RUN (default runs/quickstart) move it.
set -euo pipefail

usage() { echo "usage: $0 [--quick|--full|--large] [--epochs N]${1:+ ($1)}" >&2; exit 2; }
RECIPE=default
EPOCHS_ARG=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) RECIPE=quick ;;
    --full) RECIPE=full ;;
    --large) RECIPE=large ;;
    --epochs) [ $# -ge 2 ] || usage "--epochs needs a number"; EPOCHS_ARG=$2; shift ;;
    --epochs=*) EPOCHS_ARG=${1#--epochs=} ;;
    *) usage "unknown argument: $1" ;;
  esac
  shift
done
case "$EPOCHS_ARG" in
  ''|*[!0-9]*|0*) [ -z "$EPOCHS_ARG" ] || usage "--epochs must be a positive integer, not '$EPOCHS_ARG'" ;;
esac
MODEL=${EAGLE_MODEL:-qwen2.5-coder-0.5b}
RUN=${EAGLE_RUN:-runs/quickstart}
[ "$RECIPE" != default ] && RUN=${EAGLE_RUN:-runs/quickstart-$RECIPE}
mkdir -p "$RUN"

# The recipe: records of each kind (the chat and code answers are the base's own), epochs, draft
# shape and the benchmark's size. The draft is narrowed for CPUs: a 12k-token vocabulary and half
# the base's MLP width cost less per draft call and per training step. --context_targets also trains
# on the prompts and FIM context the loss mask leaves out (fim 2.09x -> 2.47x back to back, sampling
# 3.43x -> 3.27x: a recipe for greedy code completion; docs/training.md). --group_by_length batches
# samples of similar length: 1.18x faster training on CPUs, τ within 2% (docs/training.md).
# --ttt_length 3 (EAGLE-3 unrolls 7, this recipe did 5): 0.62x the training time of 5 steps and τ as
# high, since a small head's first steps are what its trees accept; the time saved buys a third epoch
# (3-6% more τ, in about the time 2 epochs of 5 steps took; docs/training.md).
# N_RAW ShareGPT first turns go in with their own (ChatGPT) answers, as written: no regeneration, and
# +12% chat τ for 1,200 of them on a trained default head (benchmarks/README.md, "ShareGPT's own answers").
case "$RECIPE" in
  quick)   N_FIM=16  N_CHAT=8    N_CODE=8   N_RAW=0    EPOCHS=1 BENCH_PROMPTS=2 BENCH_TOKENS=48  WORKLOADS=code,fim ;;
  default) N_FIM=150 N_CHAT=256  N_CODE=640 N_RAW=0    EPOCHS=3 BENCH_PROMPTS=8 BENCH_TOKENS=128 WORKLOADS=code,chat,fim,sample ;;
  full)    N_FIM=300 N_CHAT=1024 N_CODE=736 N_RAW=0    EPOCHS=2 BENCH_PROMPTS=8 BENCH_TOKENS=128 WORKLOADS=code,chat,fim,sample ;;
  large)   N_FIM=600 N_CHAT=1400 N_CODE=640 N_RAW=1200 EPOCHS=3 BENCH_PROMPTS=8 BENCH_TOKENS=128 WORKLOADS=code,chat,fim ;;
esac
# ShareGPT conversations: answered by the base, then taken as written, then the last 10 held out
N_SHAREGPT=$(( N_CHAT + N_RAW + 10 > 2000 ? N_CHAT + N_RAW + 10 : 2000 ))
# more epochs than the recipe's: the training step resumes a finished run and trains it on
[ -n "$EPOCHS_ARG" ] && EPOCHS=$EPOCHS_ARG

step() { printf '\n==> %s\n' "$*"; }

# bf16 where the CPU computes it (AMX, AVX512-BF16: the recipe's machine), else float32, which runs the
# batched regeneration, the feature cache and the tree verification 2-5x faster there (docs/benchmark.md).
DTYPE=$(python -c "from eagle.model.base import dtype_name, fast_dtype; print(dtype_name(fast_dtype()))")
echo "dtype: $DTYPE"

step "1/5 base model: $MODEL"
eagle models fetch "$MODEL"

step "2/5 training data in $RUN"
[ -s "$RUN/fim.jsonl" ] || eagle data corpus stdlib -o "$RUN/fim.jsonl" --max-prefix-chars 800 --max-suffix-chars 300 --seed 1
[ -s "$RUN/code_chat.jsonl" ] || eagle data corpus instructions -o "$RUN/code_chat.jsonl"
[ -s "$RUN/sharegpt.jsonl" ] || eagle data corpus sharegpt -o "$RUN/sharegpt.jsonl" --limit "$N_SHAREGPT"
# The base answers ShareGPT first turns and coding requests itself, so the head learns what the
# base will write. Batches of 64 keep the CPU busy; both steps resume where they stopped.
REGEN=(--basepath "$MODEL" --format chat --max-new-tokens 256 --max-prompt-tokens 512 --batch-size 64 --dtype "$DTYPE")
eagle data regen "${REGEN[@]}" --input "$RUN/sharegpt.jsonl" --output "$RUN/chat_regen.jsonl" --max-turns 1 --limit "$N_CHAT"
eagle data regen "${REGEN[@]}" --input "$RUN/code_chat.jsonl" --output "$RUN/code_regen.jsonl" --limit "$N_CODE"
if [ ! -s "$RUN/train.jsonl" ]; then
  python - "$RUN" "$N_FIM" "$N_CODE" "$N_CHAT" "$N_RAW" <<'EOF'
import json, random, sys
from pathlib import Path
from eagle.data.records import first_turns
run, (n_fim, n_code, n_chat, n_raw) = Path(sys.argv[1]), map(int, sys.argv[2:6])
rng = random.Random(0)
lines = lambda name: [l for l in open(run / name) if l.strip()]
fim = lines("fim.jsonl")
rng.shuffle(fim)

# ShareGPT conversations past the answered ones, up to and including their first answer (as --max-turns 1)
first = (first_turns(json.loads(l), 1) for l in lines("sharegpt.jsonl")[n_chat:n_chat + n_raw])
raw = [json.dumps(r) + "\n" for r in first if r]
train = lines("chat_regen.jsonl") + lines("code_regen.jsonl") + fim[:n_fim] + raw
# held out: FIM records and coding requests past the regenerated ones, and unseen ShareGPT chats
test = fim[n_fim:n_fim + 30] + lines("code_chat.jsonl")[n_code:n_code + 30] + lines("sharegpt.jsonl")[-10:]
rng.shuffle(train)
(run / "train.jsonl").write_text("".join(train))
(run / "test.jsonl").write_text("".join(test))
print(f"train: {len(train)} records, test: {len(test)}")
EOF
fi

step "3/5 train the draft head ($EPOCHS epochs; resumes if interrupted)"
eagle train --basepath "$MODEL" --trainpath "$RUN/train.jsonl" --testpath "$RUN/test.jsonl" \
  --savedir "$RUN/ckpt" --data-format mixed --num_epochs "$EPOCHS" --lr 5e-4 --batch_size 4 --grad_accum 1 \
  --max_length 512 --ttt_length 3 --draft_vocab_size 12000 --draft_intermediate_size 2432 \
  --features offline --save_steps 100 --context_targets --group_by_length
DRAFT="$RUN/ckpt/state_$((EPOCHS - 1))"

step "4/5 a completion, streamed"
eagle generate --basepath "$MODEL" --ea-model-path "$DRAFT" --chat --max-new-tokens 64 \
  --prompt "Write a Python function that returns the n-th Fibonacci number."

step "5/5 benchmark ($WORKLOADS, $BENCH_PROMPTS prompts each, $DTYPE)"
eagle bench --basepath "$MODEL" --ea-model-path "$DRAFT" --dtype "$DTYPE" --workloads "$WORKLOADS" \
  --methods naive,hf,pld,eagle --num-prompts "$BENCH_PROMPTS" --max-new-tokens "$BENCH_TOKENS" \
  --out "$RUN/bench.json"
echo "results: $RUN/bench.json"
