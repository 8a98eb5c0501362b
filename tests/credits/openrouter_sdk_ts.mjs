// The official TypeScript SDK (`@openrouter/sdk`, from the project's node_modules) against a
// running portal. Run by tests/credits/test_openrouter_sdk_ts.py, which prepares the data and
// checks what this prints.
//
// Environment: PORTAL_API_URL (".../api/v1"), PORTAL_MANAGEMENT_KEY, PORTAL_USAGE_KEY,
// PORTAL_GENERATION_ID (a usage event the usage key recorded).
//
// The SDK parses every response with its zod models, so a missing or mistyped field fails here
// (a ResponseValidationError). Each step's result is printed as one JSON object on stdout; any
// failure prints the step and the error on stderr and exits with status 1.
import assert from "node:assert/strict";

import { OpenRouter } from "@openrouter/sdk";
import * as errors from "@openrouter/sdk/models/errors";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const client = (apiKey) =>
  new OpenRouter({
    apiKey,
    serverURL: env("PORTAL_API_URL"),
    retryConfig: { strategy: "none" },
    timeoutMs: 20000,
  });

const management = client(env("PORTAL_MANAGEMENT_KEY"));
const usage = client(env("PORTAL_USAGE_KEY"));
const out = {};
let step = "start";

async function refused(ErrorClass, call) {
  try {
    await call();
  } catch (error) {
    assert.ok(error instanceof ErrorClass, `expected ${ErrorClass.name}, got ${error}`);
    return error.statusCode;
  }
  assert.fail(`expected ${ErrorClass.name}, got a success`);
}

try {
  step = "credits";
  const credits = await management.credits.getCredits();
  out.credits = credits.data;

  step = "current key";
  const current = (await usage.apiKeys.getCurrentKeyMetadata()).data;
  out.current_key = {
    label: current.label,
    isManagementKey: current.isManagementKey,
    usage: current.usage,
    limit: current.limit,
    limitRemaining: current.limitRemaining,
  };

  step = "keys: create";
  const created = await management.apiKeys.create({
    requestBody: { name: "ts sdk", limit: 5, limitReset: "daily" },
  });
  assert.ok(created.key.length > 20);
  const hash = created.data.hash;
  out.created = { hash, name: created.data.name, limit: created.data.limit };

  step = "keys: the new key authenticates";
  const itself = (await client(created.key).apiKeys.getCurrentKeyMetadata()).data;
  assert.equal(itself.label, created.data.label);

  step = "keys: list";
  const listed = (await management.apiKeys.list()).data.map((k) => k.hash);
  assert.ok(listed.includes(hash));
  out.listed = listed;

  step = "keys: get";
  const got = (await management.apiKeys.get({ hash })).data;
  assert.equal(got.name, "ts sdk");

  step = "keys: update";
  const updated = (
    await management.apiKeys.update({
      hash,
      requestBody: { name: "ts sdk renamed", limit: 7.5, disabled: true },
    })
  ).data;
  out.updated = { name: updated.name, limit: updated.limit, disabled: updated.disabled };
  const visible = (await management.apiKeys.list()).data.map((k) => k.hash);
  assert.ok(!visible.includes(hash), "a disabled key is listed without include_disabled");
  const all = (await management.apiKeys.list({ includeDisabled: true })).data.map((k) => k.hash);
  assert.ok(all.includes(hash));

  step = "keys: delete";
  const deleted = await management.apiKeys.delete({ hash });
  assert.equal(deleted.deleted, true);
  out.deleted_then_get = await refused(errors.NotFoundResponseError, () =>
    management.apiKeys.get({ hash }),
  );
  out.deleted_then_use = await refused(errors.UnauthorizedResponseError, () =>
    client(created.key).apiKeys.getCurrentKeyMetadata(),
  );

  step = "generation";
  const generation = (await usage.generations.getGeneration({ id: env("PORTAL_GENERATION_ID") }))
    .data;
  out.generation = {
    id: generation.id,
    model: generation.model,
    totalCost: generation.totalCost,
    tokensPrompt: generation.tokensPrompt,
    tokensCompletion: generation.tokensCompletion,
    nativeTokensCached: generation.nativeTokensCached,
    nativeTokensReasoning: generation.nativeTokensReasoning,
  };
  out.generation_unknown = await refused(errors.NotFoundResponseError, () =>
    usage.generations.getGeneration({ id: "no-such-generation" }),
  );

  step = "activity";
  const activity = await management.analytics.getUserActivity();
  out.activity = activity.data;
  const byKey = await management.analytics.getUserActivity({ apiKeyHash: "0".repeat(64) });
  assert.deepEqual(byKey.data, []);
  out.activity_bad_date = await refused(errors.BadRequestResponseError, () =>
    management.analytics.getUserActivity({ date: "not-a-date" }),
  );

  step = "organization members";
  const members = await management.organization.listMembers({ limit: 2 });
  out.members = members.result;
  const next = await members.next();
  out.members_next = next ? next.result.data : null;
  // The SDK maps no 403 for this operation: it raises its default error with the status.
  out.members_with_usage_key = await refused(errors.OpenRouterDefaultError, () =>
    usage.organization.listMembers(),
  );
} catch (error) {
  console.error(`step "${step}" failed: ${error?.stack ?? error}`);
  if (error?.rawValue !== undefined) console.error(JSON.stringify(error.rawValue));
  if (error?.body !== undefined) console.error(error.body);
  process.exit(1);
}

console.log(JSON.stringify(out));
