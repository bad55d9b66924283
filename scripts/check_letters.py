"""Checks an experiment's letter-scored outcomes against an independent computation: Python
`transformers` in f32, from the same GGUF file (issue #22's Done-when).

For every letter-scored outcome of the base model (`outcomes/base.jsonl`; `--sample N` takes
the first N per test set in file order), this script rebuilds the prompt exactly as the
study sent it: the question's `messages` from `eval/<language>-<domain>.jsonl`, with the
option block `A. ..\\nB. ..\\nC. ..\\nD. ..` rotated as the outcome's `rotation` says (the
option shown as letter i is option (i + rotation) mod 4, as `xlt_data::Question::rotated`
and `xlt-study`'s `rotated_prompt` do); renders the model's chat template with the
generation prompt; runs one f32 forward pass; takes the log-softmax over the full
vocabulary at the last position; and for each letter A-D the log-sum-exp over every
vocabulary token whose decoded text, stripped of white space, is that letter. It compares
the four values with the outcome's `letter_logprobs` and prints the largest absolute
difference, in nats.

The base model is the experiment's `fingerprint.json` `base_model` (a `.gguf` file), or
`--model PATH`. Fine-tuned models' outcomes are not checked (their adapters would need
`peft`; `crates/xlt-local/tests/peft_interop.rs` checks adapters against `peft`).

Exit status: 0 when every difference is at most `--tolerance` (default 1e-2 nat), 1 above
it, 2 for bad input (a missing file, an outcome without letters or without its question),
naming the file and line.

    /work/pyenv/bin/python scripts/check_letters.py OUT_DIR [--model PATH] [--sample N]
        [--tolerance 1e-2]

Needs `torch`, `transformers` and `gguf` (`pip install torch transformers gguf`).
"""

import argparse
import json
import os
import sys
import time

LETTERS = "ABCD"


def fail(message):
    print(f"check_letters: {message}", file=sys.stderr)
    sys.exit(2)


def read_jsonl(path):
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        fail(f"{path}: {e}")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            fail(f"{path}, line {n}: {e}")
    return out


def block(options):
    return "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, options))


def rotated_messages(record, rotation, where):
    """The prompt's messages with the options rotated by `rotation`, as the study builds
    them (`xlt-study`'s `rotated_prompt`): the first message containing the option block
    gets it replaced once."""
    messages = [dict(m) for m in record["messages"]]
    k = rotation % 4
    if k == 0:
        return messages
    original = block(record["options"])
    shown = [record["options"][(i + k) % 4] for i in range(4)]
    for m in messages:
        if original in m["content"]:
            m["content"] = m["content"].replace(original, block(shown), 1)
            return messages
    fail(f"{where}: rotation {rotation}, but no message lists the options as `A. ..`")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the experiment directory (reproduce --out)")
    ap.add_argument("--model", help="the GGUF file (default: fingerprint.json's base_model)")
    ap.add_argument("--sample", type=int, default=0, help="outcomes per test set (0: all)")
    ap.add_argument("--tolerance", type=float, default=1e-2, help="nats (default 1e-2)")
    args = ap.parse_args()

    model_path = args.model
    if model_path is None:
        fp_path = os.path.join(args.out, "fingerprint.json")
        try:
            with open(fp_path, encoding="utf-8") as f:
                model_path = json.load(f)["settings"]["base_model"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            fail(f"{fp_path}: no base_model ({e}); pass --model")
    if not model_path.endswith(".gguf") or not os.path.isfile(model_path):
        fail(f"base model {model_path}: not a .gguf file; pass --model")

    outcomes_path = os.path.join(args.out, "outcomes", "base.jsonl")
    outcomes = read_jsonl(outcomes_path)
    per_set = {}
    chosen = []
    for n, o in outcomes:
        where = f"{outcomes_path}, line {n}"
        if o.get("method") != "letters" or "letter_logprobs" not in o:
            fail(f"{where}: not a letter-scored outcome (method {o.get('method')!r})")
        key = (o["language"], o["domain"])
        per_set[key] = per_set.get(key, 0) + 1
        if args.sample and per_set[key] > args.sample:
            continue
        chosen.append((where, o))

    records = {}

    def record(language, domain, sample_id, where):
        # Outcomes name the domain (`Medical`, `Social Sciences`); files its slug.
        name = f"{language}-{domain.lower().replace(' ', '-')}"
        if name not in records:
            path = os.path.join(args.out, "eval", f"{name}.jsonl")
            records[name] = {r["sample_id"]: r for _, r in read_jsonl(path)}
        r = records[name].get(sample_id)
        if r is None:
            fail(f"{where}: question {sample_id} is not in eval/{name}.jsonl")
        return r

    # Every question is found before the model is loaded: bad input fails fast.
    chosen = [(where, o, record(o["language"], o["domain"], o["sample_id"], where))
              for where, o in chosen]

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    folder, name = os.path.split(os.path.abspath(model_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    letter_ids = {l: [] for l in LETTERS}
    for i in range(model.config.vocab_size):
        text = tok.decode([i]).strip()
        if text in letter_ids:
            letter_ids[text].append(i)

    worst = (0.0, None)
    argmax_differs = 0
    start = time.time()
    for where, o, r in chosen:
        messages = rotated_messages(r, int(o.get("rotation", 0)), where)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        ours = {l: float(torch.logsumexp(logprobs[letter_ids[l]], dim=0)) for l in LETTERS}
        recorded = o["letter_logprobs"]
        for l in LETTERS:
            if recorded.get(l) is None:
                fail(f"{where}: letter {l} has no log-probability")
            d = abs(ours[l] - recorded[l])
            if d > worst[0]:
                worst = (d, f"{where} ({o['sample_id']}, rotation {o.get('rotation', 0)}, "
                            f"letter {l}: recorded {recorded[l]:.6f}, transformers {ours[l]:.6f})")
        if max(ours, key=ours.get) != o.get("letter"):
            argmax_differs += 1

    print(f"model: {model_path}")
    print(f"reference: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"f32, CPU; {time.time() - start:.0f} s")
    print(f"outcomes checked: {len(chosen)} of {len(outcomes)} "
          f"({len(per_set)} test sets{', first ' + str(args.sample) + ' per set' if args.sample else ''})")
    print(f"max |difference|: {worst[0]:.3e} nat (tolerance {args.tolerance:g})")
    if worst[1]:
        print(f"  at {worst[1]}")
    print(f"argmax letter differs: {argmax_differs}")
    if worst[0] > args.tolerance:
        print("FAIL: above the tolerance", file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
