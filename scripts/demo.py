"""`make demo`: run the pipeline on MODEL, or on a tiny random Llama built here when none is given."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The tiny model's chat template (made of characters its tokenizer knows; the pipeline adds the BOS token)
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} | {% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def build_tiny(path: Path) -> None:
    if (path / "config.json").is_file():
        print(f"using the tiny Llama checkpoint in {path}/")
        return
    print(f"building a tiny random Llama checkpoint (transformers + a locally trained tokenizer) in {path}/")
    subprocess.run([sys.executable, str(ROOT / "tests/support/tiny_llama.py"), str(path)], check=True)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = CHAT_TEMPLATE  # so that the demo (and a deployment of it) can chat
    config_file.write_text(json.dumps(config, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint folder or hub id")
    source.add_argument("--build-tiny", type=Path, metavar="DIR", help="build a tiny random Llama here")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    model = args.model
    if args.build_tiny:
        build_tiny(args.build_tiny)
        model = str(args.build_tiny)

    import mii_core

    pipe = mii_core.pipeline(model)
    responses = pipe(["DeepSpeed is", "Seattle is"], max_new_tokens=args.max_new_tokens)
    print(responses)
    for response in responses:
        print(f"- prompt_length={response.prompt_length} generated_length={response.generated_length} "
              f"finish_reason={response.finish_reason}\n  {response.generated_text!r}")
    if getattr(pipe.tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": "Tell me about Seattle"}]
        prompt = pipe.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        print(f"chat {messages} -> prompt {prompt!r}\n  {pipe([prompt], max_new_tokens=args.max_new_tokens)[0]!r}")
    if args.build_tiny:
        print("(random weights: the text is noise; the point is that the whole path runs)")
    pipe.destroy()


if __name__ == "__main__":
    main()
