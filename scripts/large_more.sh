#!/usr/bin/env bash
# Train the `--large` recipe's head on with more data, by default data that costs no regeneration: 1,200
# more ShareGPT first turns with their own answers and 1,200 more stdlib FIM records, one epoch from its weights
# (`eagle train --init_from`), then the issue-5 benchmark (bf16) and the float32 identity check. Run
# `make quickstart ARGS="--large --epochs 4"` first. The feature cache is the large run's own, so only
# records it does not hold go through the base (it holds the last train set built in it: the large run's,
# or an earlier run of this script's). Every step skips work it already finished (training resumes).
# benchmarks/README.md has what it measured (Dec 7: fim 3.10x, chat 1.87x). N_REGEN > 0 adds the base's
# own answers to that many more ShareGPT first turns (those past the N_RAW ones), as the large recipe's
# regenerated chat: chat records that teach the head what the base writes (N_REGEN=1600: chat 2.01x and
# fim 3.04x in one run).
#
#   bash scripts/large_more.sh        # ~17 min of features, ~27 of training, ~20 of benchmarks (AMX, 2 threads)
#   EAGLE_RUN=runs/large-fim N_RAW=0 bash scripts/large_more.sh   # the ablation: the FIM records alone
#   EAGLE_RUN=runs/large-regen N_REGEN=1600 bash scripts/large_more.sh   # 19 min of answers, 18 of features, 37 of training
#   EAGLE_RUN=runs/large-regen2 N_REGEN=3600 N_FIM=2000 bash scripts/large_more.sh   # twice the answers: no better
# (copy runs/large-regen/chat_regen.jsonl into the new folder first and `eagle data regen` answers only the rest)
set -euo pipefail
MODEL=${EAGLE_MODEL:-qwen2.5-coder-0.5b}
LARGE=${EAGLE_LARGE_RUN:-runs/quickstart-large}
RUN=${EAGLE_RUN:-runs/large-more}
HEAD=${EAGLE_HEAD:-$LARGE/ckpt/state_3}
EPOCHS=${EPOCHS:-1}
N_RAW=${N_RAW:-1200}
N_FIM=${N_FIM:-1200}
N_REGEN=${N_REGEN:-0}
[ -f "$HEAD/model.safetensors" ] || { echo "no head in $HEAD: run make quickstart ARGS=\"--large --epochs 4\" first" >&2; exit 1; }
mkdir -p "$RUN"
DTYPE=$(python -c "from eagle.model.base import dtype_name, fast_dtype; print(dtype_name(fast_dtype()))")

# The large run's ShareGPT file is the corpus's first conversations (the last 10 held out); this one
# goes N_RAW + N_REGEN further: the first N_RAW new ones go in as written, the base answers the rest.
N_OLD=$(grep -c . "$LARGE/sharegpt.jsonl")
[ -s "$RUN/sharegpt.jsonl" ] || eagle data corpus sharegpt -o "$RUN/sharegpt.jsonl" --limit $((N_OLD + N_RAW + N_REGEN))
if [ "$N_REGEN" -gt 0 ]; then
  tail -n +$((N_OLD + N_RAW + 1)) "$RUN/sharegpt.jsonl" > "$RUN/sharegpt_regen.jsonl"
  eagle data regen --basepath "$MODEL" --format chat --max-new-tokens 256 --max-prompt-tokens 512 --batch-size 64 \
    --dtype "$DTYPE" --max-turns 1 --input "$RUN/sharegpt_regen.jsonl" --output "$RUN/chat_regen.jsonl" --limit "$N_REGEN"
fi

if [ ! -s "$RUN/train.jsonl" ]; then
  python - "$LARGE" "$RUN" "$N_OLD" "$N_RAW" "$N_FIM" "$N_REGEN" <<'PY'
import json, random, sys
from pathlib import Path
from eagle.data.records import first_turns
large, run, (n_old, n_raw, n_fim, n_regen) = Path(sys.argv[1]), Path(sys.argv[2]), map(int, sys.argv[3:7])
lines = lambda p: [l for l in open(p) if l.strip()]
sharegpt = lines(run / "sharegpt.jsonl")
assert sharegpt[:n_old] == lines(large / "sharegpt.jsonl"), "the ShareGPT corpus changed since the large run"
old_train, test = lines(large / "train.jsonl"), lines(large / "test.jsonl")  # the same held-out set
seen = set(old_train) | set(test)

first = (first_turns(json.loads(l), 1) for l in sharegpt[n_old:n_old + n_raw])
raw = [json.dumps(r) + "\n" for r in first if r]
regen = lines(run / "chat_regen.jsonl") if n_regen else []  # not a leftover file of an earlier run
fim = [l for l in lines(large / "fim.jsonl") if l not in seen]
rng = random.Random(1)
rng.shuffle(fim)
train = old_train + raw + fim[:n_fim]
rng.shuffle(train)
if regen:  # after the shuffle above, so that N_REGEN=0 builds the file it always has
    train += regen
    rng.shuffle(train)
(run / "train.jsonl").write_text("".join(train))
(run / "test.jsonl").write_text("".join(test))
print(f"train: {len(train)} records ({len(old_train)} of {large}, {len(raw)} new ShareGPT, {len(regen)} answered "
      f"by the base, {n_fim} new FIM), "
      f"test: {len(test)}")
PY
fi

# the large recipe's flags, from its head at a lower rate
eagle train --basepath "$MODEL" --trainpath "$RUN/train.jsonl" --testpath "$RUN/test.jsonl" --savedir "$RUN/ckpt" \
  --data-format mixed --num_epochs "$EPOCHS" --lr 3e-4 --batch_size 4 --grad_accum 1 --max_length 512 --ttt_length 3 \
  --draft_vocab_size 12000 --draft_intermediate_size 2432 --features offline --save_steps 100 --context_targets \
  --group_by_length --cache_dir "$LARGE/ckpt/feature_cache" --init_from "$HEAD"

DRAFT="$RUN/ckpt/state_$((EPOCHS - 1))"
eagle bench --basepath "$MODEL" --ea-model-path "$DRAFT" --dtype "$DTYPE" --workloads code,chat,fim \
  --methods naive,pld,eagle --num-prompts 8 --max-new-tokens 128 --out "$RUN/bench-$EPOCHS.json"
eagle bench --basepath "$MODEL" --ea-model-path "$DRAFT" --dtype float32 --workloads code,chat,fim \
  --methods naive,eagle --num-prompts 8 --max-new-tokens 64 --out "$RUN/fp32-$EPOCHS.json"
