// Which of a deployment's brokers takes a person's messages (the wire contract,
// schema/contract.py broker_index): the first 8 bytes of SHA-256 over the user id's
// canonical text (lowercase, hyphenated), as an unsigned big-endian integer, modulo the
// number of brokers. `node broker_index.js '{"ids": [...], "count": 3}'` prints the
// indexes as JSON (tests/e2e/test_brokers_by_user.py holds them to Python's).
"use strict";

const crypto = require("crypto");

function brokerIndex(userId, count) {
  const digest = crypto.createHash("sha256").update(userId.toLowerCase()).digest();
  return Number(digest.readBigUInt64BE(0) % BigInt(count));
}

module.exports = { brokerIndex };

if (require.main === module) {
  const { ids, count } = JSON.parse(process.argv[2]);
  process.stdout.write(JSON.stringify(ids.map((id) => brokerIndex(id, count))) + "\n");
}
