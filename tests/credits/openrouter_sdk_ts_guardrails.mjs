// The official TypeScript SDK's `guardrails` (`@openrouter/sdk`, from the project's
// node_modules) against a running portal. Run by tests/credits/test_guardrails_sdk.py, which
// prepares the data and checks what this prints.
//
// Environment: PORTAL_API_URL (".../api/v1"), PORTAL_MANAGEMENT_KEY, PORTAL_USAGE_KEY,
// PORTAL_USAGE_KEY_HASH, PORTAL_MEMBER_ID.
//
// The SDK parses every response with its zod models, so a missing or mistyped field fails here.
// The results are printed as one JSON object on stdout; any failure prints the step and the
// error on stderr and exits with status 1.
import assert from "node:assert/strict";

import { OpenRouter } from "@openrouter/sdk";

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
const keyHash = env("PORTAL_USAGE_KEY_HASH");
const memberId = env("PORTAL_MEMBER_ID");
const out = {};
let step = "start";

try {
  step = "create";
  const made = (
    await management.guardrails.create({
      createGuardrailRequest: {
        name: "TS guardrail",
        limitUsd: 2,
        resetInterval: "daily",
        allowedModels: ["openai/gpt-4o"],
        ignoredProviders: ["azure"],
      },
    })
  ).data;
  out.created = {
    name: made.name,
    limitUsd: made.limitUsd,
    resetInterval: made.resetInterval,
    ignoredProviders: made.ignoredProviders,
  };
  const id = made.id;

  step = "get, list, update";
  assert.equal((await management.guardrails.get({ id })).data.name, "TS guardrail");
  const listed = await management.guardrails.list();
  out.listed = listed.result.data.map((g) => g.id);
  const updated = await management.guardrails.update({
    id,
    updateGuardrailRequest: { limitUsd: 3, description: "changed" },
  });
  out.updated = { limitUsd: updated.data.limitUsd, description: updated.data.description };

  step = "assign";
  out.assignedKeys = (
    await management.guardrails.bulkAssignKeys({ id, bulkAssignKeysRequest: { keyHashes: [keyHash] } })
  ).assignedCount;
  out.assignedMembers = (
    await management.guardrails.bulkAssignMembers({
      id,
      bulkAssignMembersRequest: { memberUserIds: [memberId] },
    })
  ).assignedCount;
  const keys = await management.guardrails.listGuardrailKeyAssignments({ id });
  out.keyAssignments = keys.result.data.map((a) => [a.keyHash, a.guardrailId === id]);
  const members = await management.guardrails.listGuardrailMemberAssignments({ id });
  out.memberAssignments = members.result.data.map((a) => a.userId);
  out.allKeyAssignments = (await management.guardrails.listKeyAssignments()).result.totalCount;
  out.allMemberAssignments = (await management.guardrails.listMemberAssignments()).result.totalCount;

  step = "current key";
  // This SDK version's key model has no `budgets` (the Python SDK's has: checked there); the
  // key under a guardrail must still parse, and `budgets` is read from the raw JSON.
  const current = (await usage.apiKeys.getCurrentKeyMetadata()).data;
  assert.equal(current.isManagementKey, false);
  const raw = await fetch(`${env("PORTAL_API_URL")}/key`, {
    headers: { Authorization: `Bearer ${env("PORTAL_USAGE_KEY")}` },
  });
  const budget = (await raw.json()).data.budgets.find((b) => b.guardrail_id === id);
  out.keyBudget = { limitUsd: budget.limit_usd, resetInterval: budget.reset_interval, scope: budget.scope };

  step = "unassign, delete";
  out.unassignedKeys = (
    await management.guardrails.bulkUnassignKeys({ id, bulkUnassignKeysRequest: { keyHashes: [keyHash] } })
  ).unassignedCount;
  out.unassignedMembers = (
    await management.guardrails.bulkUnassignMembers({
      id,
      bulkUnassignMembersRequest: { memberUserIds: [memberId] },
    })
  ).unassignedCount;
  out.deleted = (await management.guardrails.delete({ id })).deleted;

  process.stdout.write(JSON.stringify(out));
} catch (error) {
  process.stderr.write(`step ${step}: ${error?.stack ?? error}\n`);
  process.exit(1);
}
