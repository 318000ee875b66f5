// A trusted backend with the service_role key (extension_tokens.admin_roles =
// 'service_role') acts for any user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SERVICE_KEY, newUser, rpc, show, supabase, validate,
} from './helpers.mjs';

test('service_role issues for any user, and the token belongs to that user', async () => {
  const user = newUser();
  const r = await rpc('extension_token_issue', { p_user_id: user, p_name: 'from the backend' },
    { token: SERVICE_KEY });
  assert.equal(r.status, 200, show(r));
  const v = await validate(r.body.access_token);
  assert.equal(v.valid, true);
  assert.equal(v.user_id, user);
  assert.equal(v.token_name, 'from the backend');

  const { data, error } = await supabase(SERVICE_KEY)
    .rpc('extension_token_issue', { p_user_id: newUser() });
  assert.equal(error, null, JSON.stringify(error));
  assert.equal((await validate(data.access_token)).valid, true);
});

test('service_role lists any user\'s sessions', async () => {
  const user = newUser();
  const mine = await rpc('extension_token_issue', { p_user_id: user }, { token: SERVICE_KEY });
  assert.equal(mine.status, 200, show(mine));
  const { data, error } = await supabase(SERVICE_KEY)
    .rpc('extension_token_list', { p_user_id: user });
  assert.equal(error, null, JSON.stringify(error));
  assert.deepEqual(data.map((s) => s.session_id), [mine.body.session_id]);
  assert.equal(data[0].user_id, user);
});

test('service_role revokes any user\'s sessions, all at once or one token', async () => {
  const a = newUser();
  const b = newUser();
  const pa = (await rpc('extension_token_issue', { p_user_id: a }, { token: SERVICE_KEY })).body;
  const pb = (await rpc('extension_token_issue', { p_user_id: b }, { token: SERVICE_KEY })).body;

  const all = await rpc('revoke_user_extension_tokens', { p_user_id: a }, { token: SERVICE_KEY });
  assert.equal(all.status, 200, show(all));
  assert.equal(all.body, 1);
  assert.equal((await validate(pa.access_token)).error, 'revoked');
  assert.equal((await validate(pb.access_token)).valid, true);

  const one = await supabase(SERVICE_KEY).rpc('extension_token_revoke', { p_token: pb.access_token });
  assert.equal(one.error, null, JSON.stringify(one.error));
  assert.equal(one.data, true);
  assert.equal((await validate(pb.access_token)).error, 'revoked');

  const list = await rpc('extension_token_list', { p_user_id: b }, { token: SERVICE_KEY });
  assert.equal(list.body[0].status, 'revoked', show(list));
});

test('service_role without p_user_id and without a user is HTTP 400 with 22023', async () => {
  const r = await rpc('extension_token_issue', {}, { token: SERVICE_KEY });
  assert.equal(r.status, 400, show(r));
  assert.equal(r.body.code, '22023');
  assert.match(r.body.message, /p_user_id must not be null/);
});
