"""Squall's launcher for `native` actions (OpenWhisk's dockerskeleton): runs the executable once per activation.

Each activation: `exec '<the JSON argument>'` with the `__OW_*` variables set; its stderr and every stdout line
but the last go to the logs; the last stdout line is the result (a JSON object), written on fd 3.
"""

import json
import os
import subprocess
import sys


def main() -> None:
    executable = sys.argv[1]
    replies = os.fdopen(3, "wb", buffering=0)
    replies.write(b'{"ok":true}\n')
    exported: set[str] = set()
    for line in sys.stdin.buffer:
        message = json.loads(line)
        env = dict(os.environ)
        for name in exported:
            env.pop(name, None)
        exported = set()
        for key, val in message.items():
            if key != "value" and val is not None:
                name = "__OW_" + key.upper()
                env[name] = val if isinstance(val, str) else json.dumps(val)
                exported.add(name)
        argument = json.dumps(message.get("value", {}), ensure_ascii=False)
        try:
            done = subprocess.run([executable, argument], env=env, stdout=subprocess.PIPE, check=False)
            lines = done.stdout.decode("utf-8", "replace").rstrip("\n").split("\n")
        except OSError as exc:
            print(f"Cannot run the action: {exc}", file=sys.stderr, flush=True)
            lines = [json.dumps({"error": f"Cannot run the action: {exc.strerror}"})]
        for text in lines[:-1]:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
        last = lines[-1].strip() if lines else ""
        replies.write(last.replace("\n", " ").encode() + b"\n")


if __name__ == "__main__":
    main()
