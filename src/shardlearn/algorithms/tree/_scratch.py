"""Large per-level arrays handed out again once nothing holds them.

A tree level allocates its histograms afresh: on a worker, the sums of its shards;
on the coordinator, the workers' sums added up with the siblings derived. Arrays
that large come from the kernel as new pages, and touching them costs a page
fault per page (with numpy's transparent huge pages, the kernel zeroing 2 MB a
fault). A random forest's deep levels hold thousands of node histograms at once:
measured on 2 cores (160,000 x 28, 50 trees in one pass, depth 10), 20,000-36,000
faults and 1.0-1.6 s of system time a fit, about a third of its CPU time; without
huge pages, 650,000 faults and 4.5 s.

A :class:`shardlearn.runtime.scratch.ScratchPool` keeps a few buffers and lends
out views of them, each lent again only once no array refers to it (a reply
waiting to be sent, the coordinator's level held as the next level's parents).

One pool serves the whole process (:data:`POOL`: the coordinator and every worker
thread of the process, under a lock) and outlives a fit, so that the next fit in
the process (a worker's next fit, a search over parameters) touches no new memory:
the same forest's second fit in-process took 1.15-1.27 s with no page faults,
against 1.8-2.5 s and 0.1-1.1 s of system time with fresh arrays (most of a
forest's levels come once a fit, so pools per fit saved little). It keeps at most
the pool's default 8 buffers and 512 MB, for the life of the process.

Each level's histograms are about twice the last level's: buffers made with
exact sizes were 24 in that forest's first fit, 763 MB (2-78 MB each), and its
system time 1.6 s; with the pool's reserves (a level grows into the buffer the
last one used), 3 buffers of 78 MB touched, 0.41 s of system time, and the first
fit took 1.75 s instead of 2.38 s (in-process, 2 workers).
"""

from __future__ import annotations

from ...runtime.scratch import ScratchPool

#: The process's pool of per-level histograms: each of 2 workers' level, the
#: coordinator's level and the one held as parents, plus spares.
POOL = ScratchPool()
