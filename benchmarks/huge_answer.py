"""One provider answers a non-streaming request with 1 GiB (a JSON body, or SSE though no stream was asked
for); a second is healthy. Prints what the first attempt became, how long the request took, the worst
event-loop stall (a 5 ms ticker beside the request) and the RSS growth.

    python benchmarks/huge_answer.py json
    python benchmarks/huge_answer.py sse

Run it from a checkout of an older llmroute (PYTHONPATH) to compare.
"""

import asyncio, resource, subprocess, sys, time

UPSTREAM = r'''
import asyncio, sys
GIB, PIECE = 1 << 30, 1 << 16
OK = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}'
async def huge(reader, writer):
    await reader.readuntil(b"\r\n\r\n"); await reader.read(65536)
    if sys.argv[1] == "json":
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % GIB)
        piece = b" " * PIECE
    else:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % GIB)
        event = b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"x" * 900 + b'"}}]}\n\n'
        piece = event * (PIECE // len(event)); piece += b" " * (PIECE - len(piece))
    try:
        for _ in range(GIB // PIECE):
            writer.write(piece); await writer.drain()
    except ConnectionError:
        pass
    writer.close()
async def good(reader, writer):
    await reader.readuntil(b"\r\n\r\n"); await reader.read(65536)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(OK), OK))
    await writer.drain(); writer.close()
async def main():
    a = await asyncio.start_server(huge, "127.0.0.1", 0); b = await asyncio.start_server(good, "127.0.0.1", 0)
    print(a.sockets[0].getsockname()[1], b.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''

async def main(kind: str) -> None:
    from llmroute import LLMRouter
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM, kind], stdout=subprocess.PIPE, text=True)
    try:
        bad, good = proc.stdout.readline().split()
        price = {"input": 0.1, "output": 0.1}
        config = {"providers": {
            "bad": {"base_url": f"http://127.0.0.1:{bad}/v1", "model": "m", "price_per_m": {"input": 0.01, "output": 0.01}, "timeout_s": 3},
            "good": {"base_url": f"http://127.0.0.1:{good}/v1", "model": "m", "price_per_m": price, "timeout_s": 3}},
            "strategy": "cost_optimized", "retry_rounds": 0}
        worst = 0.0
        async def ticker():
            nonlocal worst
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.005)
                now = time.perf_counter(); worst = max(worst, now - last - 0.005); last = now
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        async with LLMRouter(config=config, ledger=False) as router:
            tick = asyncio.ensure_future(ticker())
            started = time.perf_counter()
            result = await router.generate("hi", max_tokens=5)
            took = time.perf_counter() - started
            tick.cancel()
        first = result.attempts[0]
        rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        print(f"{kind}: {first.provider} {first.kind} after {took:.2f} s; answered by {result.provider}; "
              f"worst stall {worst * 1000:.0f} ms; RSS +{rss:.0f} MiB")
    finally:
        proc.kill()

asyncio.run(main(sys.argv[1]))
