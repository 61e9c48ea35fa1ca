// Several rusher nodes sharing one redis-server (adapter = "redis") behave as
// one Pusher deployment: the cases of cluster-cases.mjs, with the Redis
// outage and restart cases that only a single Redis has.

import { clusterSuite } from './cluster-cases.mjs';

clusterSuite({ redisKind: 'single' });
