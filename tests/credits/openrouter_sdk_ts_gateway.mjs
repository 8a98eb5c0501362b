// The official TypeScript SDK (`@openrouter/sdk`) against the portal's gateway: a chat
// completion, a streamed one, and a 402 raising the SDK's typed error. Run by
// tests/credits/test_gateway_sdk.py, which prepares the upstream and checks what this prints.
//
// Environment: PORTAL_API_URL (".../api/v1"), PORTAL_USAGE_KEY, PORTAL_MODEL.
import assert from "node:assert/strict";

import { OpenRouter } from "@openrouter/sdk";
import * as errors from "@openrouter/sdk/models/errors";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const client = new OpenRouter({
  apiKey: env("PORTAL_USAGE_KEY"),
  serverURL: env("PORTAL_API_URL"),
  retryConfig: { strategy: "none" },
  timeoutMs: 20000,
});
const model = env("PORTAL_MODEL");
const messages = [{ role: "user", content: "Say hello, in four tokens." }];
const out = {};
let step = "start";

try {
  step = "chat";
  const result = await client.chat.send({ chatRequest: { model, messages, maxTokens: 200 } });
  out.chat = {
    id: result.id,
    model: result.model,
    content: result.choices[0].message.content,
    cost: result.usage.cost,
  };

  step = "stream";
  const stream = await client.chat.send({
    chatRequest: { model, messages, maxTokens: 200, stream: true },
  });
  let text = "";
  let last = null;
  const ids = new Set();
  for await (const chunk of stream) {
    ids.add(chunk.id);
    text += chunk.choices[0]?.delta?.content ?? "";
    last = chunk;
  }
  out.stream = { ids: [...ids], text, cost: last.usage.cost, model: last.model };

  step = "402";
  try {
    await client.chat.send({ chatRequest: { model, messages, maxTokens: 120000 } });
    assert.fail("expected PaymentRequiredResponseError, got a success");
  } catch (error) {
    assert.ok(error instanceof errors.PaymentRequiredResponseError, `got ${error}`);
    out.refused = { status: error.statusCode, type: error.data$.error.metadata?.type };
  }
} catch (error) {
  console.error(`step "${step}" failed: ${error?.stack ?? error}`);
  if (error?.rawValue !== undefined) console.error(JSON.stringify(error.rawValue));
  if (error?.body !== undefined) console.error(error.body);
  process.exit(1);
}

console.log(JSON.stringify(out));
