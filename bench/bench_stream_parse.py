"""Worker CPU per message of the Gemini provider's stream: the SDK path against the rest path.

    python -m bench.bench_stream_parse [--messages 2000] [--chunks 20] [--history 6] [--rounds 3]

Both run in this process through GeminiProvider.stream_reply (GEMINI_STREAM_CLIENT=sdk, then
rest), against bench/upstream.py in a process of its own (so its CPU is not counted): each
message builds its request (system prompt, `--history` turns, the message), sends it on the
SDK's pooled HTTP client, reads `--chunks` SSE chunks with a running usage report and
relays the deltas, as the reply's run does. CPU is this process's (time.process_time);
rounds alternate sdk/rest so a busy machine slows both alike; the best round counts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--history", type=int, default=6, help="earlier turns sent")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream", "--port", "0", "--chunks", str(args.chunks)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(upstream.stdout.readline().split()[1])
        results = measure(args, f"http://127.0.0.1:{port}")
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
    report(args, results)


def measure(args, base_url: str) -> dict[str, list[tuple[float, float]]]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.update(
        {
            "LLM_PROVIDER": "gemini",
            "GEMINI_API_KEY": "bench-key-not-secret",
            "GEMINI_BASE_URL": base_url,
            "GEMINI_RETRY_ATTEMPTS": "1",
        }
    )
    import django

    django.setup()
    from django.test import override_settings

    from chat.llm import get_provider
    from chat.llm.base import Turn

    history = [
        Turn("user" if i % 2 == 0 else "model", f"turn {i}: " + "some earlier text " * 20)
        for i in range(args.history)
    ]

    def one_message() -> int:
        stream = get_provider().stream_reply(
            system_prompt="You are a helpful assistant for pixel art. " * 10,
            history=history,
            message="Tell me about dithering.",
            max_output_tokens=512,
        )
        deltas = sum(1 for _ in stream)
        assert stream.result is not None and stream.result.usage is not None
        return deltas

    results: dict[str, list[tuple[float, float]]] = {"sdk": [], "rest": []}
    for round_number in range(args.rounds):
        for name in results:
            with override_settings(GEMINI_STREAM_CLIENT=name):
                for _ in range(min(200, args.messages)):  # warm-up: pool, imports, caches
                    one_message()
                cpu, wall = time.process_time(), time.perf_counter()
                deltas = 0
                for _ in range(args.messages):
                    deltas += one_message()
                cpu = time.process_time() - cpu
                wall = time.perf_counter() - wall
            assert deltas == args.messages * args.chunks, deltas
            results[name].append((cpu * 1000 / args.messages, wall * 1000 / args.messages))
            print(
                f"round {round_number + 1} {name:>4}: {cpu * 1000 / args.messages:.3f} ms CPU, "
                f"{wall * 1000 / args.messages:.3f} ms wall per message",
                flush=True,
            )
    return results


def report(args, results) -> None:
    sdk = min(cpu for cpu, _ in results["sdk"])
    rest = min(cpu for cpu, _ in results["rest"])
    print()
    print(
        f"{args.messages} messages x {args.rounds} rounds, {args.chunks} chunks, "
        f"{args.history} history turns; best round, CPU per message:"
    )
    print(f"  sdk  (generate_content_stream): {sdk:.3f} ms")
    print(f"  rest (chat.llm.gemini_rest):    {rest:.3f} ms")
    print(f"  ratio sdk / rest: {sdk / rest:.1f}x, saved {sdk - rest:.3f} ms per message")
    spread = {name: statistics.median(cpu for cpu, _ in rounds) for name, rounds in results.items()}
    print(f"  (median rounds: sdk {spread['sdk']:.3f} ms, rest {spread['rest']:.3f} ms)")


if __name__ == "__main__":
    main()
