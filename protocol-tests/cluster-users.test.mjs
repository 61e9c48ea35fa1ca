// Watchlists and peer channels across two nodes on one redis-server: the
// cases of cluster-users-cases.mjs.

import { usersSuite } from './cluster-users-cases.mjs';

usersSuite({ redisKind: 'single' });
