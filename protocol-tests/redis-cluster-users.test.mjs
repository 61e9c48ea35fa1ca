// Watchlists and peer channels across two nodes on a Redis Cluster of three
// masters (`[redis] cluster = true`): the cases of cluster-users-cases.mjs,
// with the users' sign-in hashes on several shards.

import { usersSuite } from './cluster-users-cases.mjs';

usersSuite({ redisKind: 'cluster' });
