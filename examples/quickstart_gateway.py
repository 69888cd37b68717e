"""Ask the gateway started by `llmroute try` through the official openai client."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="not-needed-locally")
response = client.chat.completions.with_raw_response.create(
    model="balanced",  # or cost_optimized, latency_optimized, quality_optimized, quality_aware
    max_tokens=100,
    messages=[{"role": "user", "content": "Qualify this lead: TechCorp, 500 employees, SaaS industry"}],
)
reply = response.parse()
print(reply.choices[0].message.content)
print("served by", response.headers["x-llmroute-provider"], "for $", response.headers["x-llmroute-cost-usd"],
      "fallback:", response.headers["x-llmroute-fallback"])
