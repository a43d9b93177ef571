#!/usr/bin/env bash
# Train the `--full` recipe's head on with more data: the base's answers to 1,566 more ShareGPT
# first turns (1,410 kept; regen drops the rest) and 600 more FIM records, one epoch from its weights
# (`eagle train --init_from`), then the issue-5 benchmark. Run `make quickstart ARGS="--full
# --epochs 4"` first. Every step skips work it already finished. benchmarks/README.md has what it
# measured (Dec 6).
#
#   bash scripts/more_data.sh        # ~25 min of answers, ~30 of features, ~35 of training, ~25 of benchmarks
#   EPOCHS=2 bash scripts/more_data.sh   # then train on for a second epoch (resumes; ~35 min) and benchmark that
set -euo pipefail
MODEL=${EAGLE_MODEL:-qwen2.5-coder-0.5b}
FULL=${EAGLE_FULL_RUN:-runs/quickstart-full}
RUN=${EAGLE_RUN:-runs/more}
HEAD="$FULL/ckpt/state_3"
EPOCHS=${EPOCHS:-1}
[ -f "$HEAD/model.safetensors" ] || { echo "no head in $HEAD: run make quickstart ARGS=\"--full --epochs 4\" first" >&2; exit 1; }
mkdir -p "$RUN"
DTYPE=$(python -c "from eagle.model.base import dtype_name, fast_dtype; print(dtype_name(fast_dtype()))")

# ShareGPT conversations 1..1990 (the full run answered 1..1024; the last 10 of 2,000 are held out), then
# 600 of conversations 2001..3000; the answers of the full run are kept, so only the new ones are generated
[ -s "$RUN/chat_regen.jsonl" ] || cp "$FULL/chat_regen.jsonl" "$RUN/chat_regen.jsonl"
[ -s "$RUN/sharegpt3000.jsonl" ] || eagle data corpus sharegpt -o "$RUN/sharegpt3000.jsonl" --limit 3000
tail -n +2001 "$RUN/sharegpt3000.jsonl" > "$RUN/sharegpt_extra.jsonl"
REGEN=(--basepath "$MODEL" --format chat --max-new-tokens 256 --max-prompt-tokens 512 --batch-size 64 --dtype "$DTYPE" --max-turns 1)
eagle data regen "${REGEN[@]}" --input "$FULL/sharegpt.jsonl" --output "$RUN/chat_regen.jsonl" --limit 1990
eagle data regen "${REGEN[@]}" --input "$RUN/sharegpt_extra.jsonl" --output "$RUN/chat_regen_extra.jsonl" --limit 600

if [ ! -s "$RUN/train.jsonl" ]; then
  python - "$FULL" "$RUN" <<'PY'
import random, sys
from pathlib import Path
full, run = Path(sys.argv[1]), Path(sys.argv[2])
lines = lambda p: [l for l in open(p) if l.strip()]
old_train, test = lines(full / "train.jsonl"), lines(full / "test.jsonl")  # the same held-out set
seen = set(old_train) | set(test)
new_chat = [l for name in ("chat_regen.jsonl", "chat_regen_extra.jsonl") for l in lines(run / name) if l not in seen]
rng = random.Random(1)
fim = [l for l in lines(full / "fim.jsonl") if l not in seen]
rng.shuffle(fim)
train = old_train + new_chat + fim[:600]
rng.shuffle(train)
(run / "train.jsonl").write_text("".join(train))
(run / "test.jsonl").write_text("".join(test))
print(f"train: {len(train)} records ({len(old_train)} of {full}, {len(new_chat)} new chat, 600 new FIM), test: {len(test)}")
PY
fi

eagle train --basepath "$MODEL" --trainpath "$RUN/train.jsonl" --testpath "$RUN/test.jsonl" --savedir "$RUN/ckpt" \
  --data-format mixed --num_epochs "$EPOCHS" --lr 3e-4 --batch_size 4 --grad_accum 1 --max_length 512 --ttt_length 5 \
  --draft_vocab_size 12000 --draft_intermediate_size 2432 --features offline --save_steps 100 --context_targets \
  --init_from "$HEAD"

eagle bench --basepath "$MODEL" --ea-model-path "$RUN/ckpt/state_$((EPOCHS - 1))" --dtype "$DTYPE" --workloads code,chat,fim \
  --methods naive,pld,eagle --num-prompts 8 --max-new-tokens 128 --out "$RUN/bench-$EPOCHS.json"
eagle bench --basepath "$MODEL" --ea-model-path "$RUN/ckpt/state_$((EPOCHS - 1))" --dtype float32 --workloads code,chat,fim \
  --methods naive,eagle --num-prompts 8 --max-new-tokens 64 --out "$RUN/fp32-$EPOCHS.json"
