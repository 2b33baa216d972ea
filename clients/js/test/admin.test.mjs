// CrierAdmin: UserSig v2 identical to Tencent's Node library, and signed REST calls to a real
// `crier serve`.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import { CrierAdmin, CrierApiError, genUserSig } from '../dist/admin.js';
import { APP, KEY, account, client, connected, startServer, workspace } from './helpers.mjs';

const require = createRequire(import.meta.url);
const TLSSigAPIv2 = require('tls-sig-api-v2');

/** Runs `make` with Date.now frozen at `seconds` (Tencent's library reads the clock itself). */
function at(seconds, make) {
  const now = Date.now;
  Date.now = () => seconds * 1000 + 123;
  try {
    return make();
  } finally {
    Date.now = now;
  }
}

// shared/spec/rest-api.md §2: made by Tencent's libraries with the clock frozen.
const VECTOR = {
  sdkAppId: 1400000000,
  secretKey: '5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e',
  identifier: 'xiaojun',
  time: 1700000000,
  expire: 15552000,
};
const NODE_TOKEN =
  'eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwhWZiflZpXlQqeKU7MSCgswUJStDEwMogMiUZOamKlkZmqOKplYUZBaBxE1NTY3gosWZ6UpWSj5ljuYp*p7l5unBxXnF2WVhVU4uAf7Ozi5JpX7O5SbuHuUhzgZJmQXaTia2SrUAohcx8g__';

function decode(token) {
  const { inflateSync } = require('node:zlib');
  const base64 = token.replace(/\*/g, '+').replace(/-/g, '/').replace(/_/g, '=');
  return JSON.parse(inflateSync(Buffer.from(base64, 'base64')).toString());
}

test('genUserSig reproduces the spec test vectors', () => {
  assert.equal(genUserSig(VECTOR), NODE_TOKEN);
  assert.equal(decode(genUserSig(VECTOR))['TLS.sig'], 'LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=');
  const admin = genUserSig({ ...VECTOR, identifier: 'administrator', expire: 86400 });
  assert.equal(decode(admin)['TLS.sig'], 'yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=');
});

test('genUserSig is byte-identical to tls-sig-api-v2 for the same inputs and time', () => {
  const cases = [
    [1400000000, VECTOR.secretKey, 'xiaojun', 15552000, 1700000000],
    [1400000123, KEY, 'administrator', 86400, 1712345678],
    [20000001, 'short', 'user_with-dashes_123', 1, 1600000000],
    [4294967295, 'ключ 密钥 🔑', '用户', 604800, 2000000000],
    [1, 'k', 'a'.repeat(32), 0, 0],
  ];
  for (const [sdkAppId, secretKey, identifier, expire, time] of cases) {
    const theirs = at(time, () => new TLSSigAPIv2.Api(sdkAppId, secretKey).genUserSig(identifier, expire));
    assert.equal(genUserSig({ sdkAppId, secretKey, identifier, expire, time }), theirs, identifier);
    // The clock is read the same way when no time is given.
    const ours = at(time, () => new CrierAdmin({ url: 'http://unused', sdkAppId, secretKey }).genUserSig(identifier, expire));
    assert.equal(ours, theirs, identifier);
  }
  // With a user buffer (TRTC's PrivateMapKey), signed and carried as base64.
  const userBuf = Buffer.from([0, 1, 2, 250, 251, 252, 65, 66]);
  const theirs = at(1700000000, () => new TLSSigAPIv2.Api(1400000000, 'k').genSig('u', 300, userBuf));
  assert.equal(genUserSig({ sdkAppId: 1400000000, secretKey: 'k', identifier: 'u', expire: 300, time: 1700000000, userBuf }), theirs);
});

test('CrierAdmin: its UserSigs log in and sign REST calls; a wrong key is refused with its code', { timeout: 60_000 }, async (t) => {
  const server = await startServer(t, workspace(t));
  const admin = new CrierAdmin({ url: server.http, sdkAppId: APP, secretKey: KEY });

  // A page's UserSig, minted by the admin, and one from Tencent's library: both log in.
  for (const make of [
    (id) => admin.genUserSig(id),
    (id) => new TLSSigAPIv2.Api(APP, KEY).genUserSig(id, 86400),
  ]) {
    const identifier = account();
    const c = client(t, server, { identifier, getUserSig: () => make(identifier) });
    const errors = [];
    c.on('error', (e) => errors.push(e));
    assert.equal((await connected(c)).identifier, identifier);
    assert.deepEqual(errors, []);
  }

  const imported = await admin.importAccount('someone');
  assert.equal(imported.ActionStatus, 'OK');
  const check = await admin.call('im_open_login_svc/account_check', { CheckItem: [{ UserID: 'someone' }] });
  assert.equal(check.ResultItem[0].AccountStatus, 'Imported');
  const taskId = await admin.push({ MsgBody: [{ MsgType: 'TIMTextElem', MsgContent: { Text: 'x' } }] });
  assert.match(taskId, /\S/);

  const wrong = new CrierAdmin({ url: server.http, sdkAppId: APP, secretKey: 'not the key' });
  await assert.rejects(wrong.importAccount('x'), (e) => e instanceof CrierApiError && e.code == 70009 && e.answer.ActionStatus == 'FAIL');
  const notAdmin = new CrierAdmin({ url: server.http, sdkAppId: APP, secretKey: KEY, identifier: 'someone' });
  await assert.rejects(notAdmin.push({ MsgBody: [] }), (e) => e.code == 90009);
});
