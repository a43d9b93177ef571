#!/usr/bin/env bash
# Round 2 on top of scripts/more_data.sh's head (runs/more/ckpt/state_1, run `EPOCHS=2 bash
# scripts/more_data.sh` first): fine-tune it (`eagle train --init_from`) for one epoch on
#   - its 900 FIM records with the middles the base itself writes (`eagle data regen --format fim`;
#     the base seldom ends a middle, so most run to 128 tokens, as the `fim` benchmark's outputs do),
#   - the base's answers to 1,024 more ShareGPT first turns (conversations 2601..3624; 935 kept),
#   - 1,000 of the earlier chat and code records, drawn at random, so the head keeps what it knew,
# then the issue-5 benchmarks. Every step skips work it already finished.
# Not measured yet: its first run (AMX machine, Dec 6) finished the data (FIM middles in 19 min, 888
# of 900 running to 128 tokens; 935 of the 1,024 chat answers kept; 2,835 records, 809k tokens) and
# the features, and went with that machine during training.
#
#   bash scripts/finetune_round2.sh   # ~20 min FIM middles, ~13 chat answers, ~30 features, ~25 training, ~25 benchmarks
set -euo pipefail
MODEL=${EAGLE_MODEL:-qwen2.5-coder-0.5b}
PREV=${EAGLE_PREV_RUN:-runs/more}
RUN=${EAGLE_RUN:-runs/round2}
HEAD="$PREV/ckpt/state_1"
[ -f "$HEAD/model.safetensors" ] || { echo "no head in $HEAD: run EPOCHS=2 bash scripts/more_data.sh first" >&2; exit 1; }
mkdir -p "$RUN"
DTYPE=$(python -c "from eagle.model.base import dtype_name, fast_dtype; print(dtype_name(fast_dtype()))")

is_fim='import json, sys; [sys.stdout.write(l) for l in sys.stdin if ("prefix" in json.loads(l)) == (sys.argv[1] == "fim")]'
[ -s "$RUN/fim_in.jsonl" ] || python -c "$is_fim" fim < "$PREV/train.jsonl" > "$RUN/fim_in.jsonl"
eagle data regen --basepath "$MODEL" --format fim --input "$RUN/fim_in.jsonl" --output "$RUN/fim_regen.jsonl" \
  --max-new-tokens 128 --max-prompt-tokens 512 --batch-size 64 --dtype "$DTYPE"
[ -s "$RUN/sharegpt5000.jsonl" ] || eagle data corpus sharegpt -o "$RUN/sharegpt5000.jsonl" --limit 5000
sed -n 2601,3624p "$RUN/sharegpt5000.jsonl" > "$RUN/sharegpt_more.jsonl"
eagle data regen --basepath "$MODEL" --format chat --max-new-tokens 256 --max-prompt-tokens 512 --batch-size 64 \
  --dtype "$DTYPE" --max-turns 1 --input "$RUN/sharegpt_more.jsonl" --output "$RUN/chat_regen_2601.jsonl"

if [ ! -s "$RUN/train.jsonl" ]; then
  python - "$PREV" "$RUN" <<'PY'
import json, random, sys
from pathlib import Path
prev, run = Path(sys.argv[1]), Path(sys.argv[2])
lines = lambda p: [l for l in open(p) if l.strip()]
test = set(lines(prev / "test.jsonl"))  # the same held-out set
old = [l for l in lines(prev / "train.jsonl") if "prefix" not in json.loads(l)]  # chat and code; FIM comes regenerated
fim = lines(run / "fim_regen.jsonl")
chat = [l for l in lines(run / "chat_regen_2601.jsonl") if l not in test]
rng = random.Random(2)
replay = rng.sample(old, 1000)
train = fim + chat + replay
rng.shuffle(train)
(run / "train.jsonl").write_text("".join(train))
(run / "test.jsonl").write_text("".join(lines(prev / "test.jsonl")))
print(f"train: {len(train)} records: {len(fim)} FIM with the base's middles, {len(chat)} new chat, "
      f"{len(replay)} of the {len(old)} earlier chat and code records; test: {len(test)}")
PY
fi

eagle train --basepath "$MODEL" --trainpath "$RUN/train.jsonl" --testpath "$RUN/test.jsonl" --savedir "$RUN/ckpt" \
  --data-format mixed --num_epochs 1 --lr 2e-4 --batch_size 4 --grad_accum 1 --max_length 512 --ttt_length 5 \
  --draft_vocab_size 12000 --draft_intermediate_size 2432 --features offline --save_steps 100 --context_targets \
  --init_from "$HEAD"

eagle bench --basepath "$MODEL" --ea-model-path "$RUN/ckpt/state_0" --dtype "$DTYPE" --workloads code,chat,fim \
  --methods naive,pld,eagle --num-prompts 8 --max-new-tokens 128 --out "$RUN/bench.json"
eagle bench --basepath "$MODEL" --ea-model-path "$RUN/ckpt/state_0" --dtype float32 --workloads code,chat,fim \
  --methods naive,eagle --num-prompts 8 --max-new-tokens 64 --out "$RUN/fp32.json"
