// Mints LiveKit access tokens (HS256 JWTs) with node:crypto alone, for the self-test and for
// running peer.mjs by hand: `node token.mjs IDENTITY ROOM [--kind agent] [--key devkey]
// [--secret secret] [--ttl 3600]` prints the token. The grants: join ROOM, publish, subscribe,
// publish data, update own metadata/attributes.
import { createHmac } from 'node:crypto';
import { pathToFileURL } from 'node:url';

const b64url = (buf) =>
  Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');

export function mintToken({ identity, room, kind, key = 'devkey', secret = 'secret', ttl = 3600, name }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: key,
    sub: identity,
    nbf: now - 10,
    exp: now + ttl,
    name: name ?? identity,
    video: {
      room,
      roomJoin: true,
      canPublish: true,
      canSubscribe: true,
      canPublishData: true,
      canUpdateOwnMetadata: true,
    },
  };
  if (kind) claims.kind = kind;
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = b64url(createHmac('sha256', secret).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [identity, room, ...rest] = process.argv.slice(2);
  if (!identity || !room) {
    console.error('usage: node token.mjs IDENTITY ROOM [--kind agent] [--key K] [--secret S] [--ttl SECONDS]');
    process.exit(2);
  }
  const opt = {};
  for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = rest[i + 1];
  process.stdout.write(
    mintToken({ identity, room, kind: opt.kind, key: opt.key, secret: opt.secret, ttl: opt.ttl ? Number(opt.ttl) : undefined }) + '\n',
  );
}
