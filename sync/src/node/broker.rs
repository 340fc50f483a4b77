//! The escrow broker: merging counters, the escrow digest exchange, and rights moving
//! between nodes — requests sized by demand to up to `rights_donors_max` donors at once,
//! timed out and retried with backoff under a budget, and donations that keep a busy
//! donor's reserve (see "Escrow" in docs/PROTOCOL.md). Split from `node.rs` so the
//! brokering reads alone.

use super::*;

impl Node {
    /// The escrow digest, first brought up to date with the counters consumes and refunds
    /// changed.
    pub(super) fn escrow_digest(&mut self) -> &EscrowDigest {
        self.refresh_escrow_digest();
        &self.escrow_digest
    }

    /// Rehashes every counter a consume or a refund changed since the last refresh. The digest is a
    /// function of the counters only (bucket XORs, an unordered table), so the order and
    /// repeats of `digest_stale` do not matter, and the result equals eager updates.
    pub(super) fn refresh_escrow_digest(&mut self) {
        if self.digest_stale.is_empty() {
            return;
        }
        let mut stale = std::mem::take(&mut self.digest_stale);
        stale.sort_unstable();
        stale.dedup();
        for key in &stale {
            if let Some(counter) = self.escrow.get(key) {
                self.escrow_digest.update(key, counter);
            }
        }
        // Keep the allocation for the next batch.
        stale.clear();
        self.digest_stale = stale;
    }

    /// Records that this node changed a counter (its own cells): digest updated, pushed
    /// with the next batch, persisted with the next [`Node::take_changes`].
    pub(super) fn touch(&mut self, key: CounterKey) {
        if let Some(counter) = self.escrow.get(&key) {
            self.escrow_digest.update(&key, counter);
        }
        self.mark_changed(key);
    }

    /// [`Node::touch`] without the digest (the caller updated it).
    pub(super) fn mark_changed(&mut self, key: CounterKey) {
        self.escrow_dirty.insert(key);
        self.persist_dirty.insert(key);
        self.own_changes += 1;
    }

    /// Merges peers' counters; returns how many changed here.
    /// Merges counters from a peer; returns the keys whose counter changed here.
    pub(super) fn merge_counters(
        &mut self,
        now_ms: u64,
        counters: &[(CounterKey, BoundedCounter)],
    ) -> Vec<CounterKey> {
        let mut changed = Vec::new();
        for (key, counter) in counters {
            if self.is_sealed_here(key.period) {
                // Forgotten here (`forget_sealed_counters`): a peer that has not sealed yet
                // still sends it.
                continue;
            }
            let before = self.escrow.get(key).map_or(0, |c| c.incoming(self.id));
            if self.escrow.merge_counter(*key, counter) {
                // Counted here, whatever message brought them (a reply, or the donor's
                // push arriving first): replays merge to nothing and count nothing.
                let after = self.escrow.get(key).map_or(0, |c| c.incoming(self.id));
                self.stats.rights_received = self.stats.rights_received.saturating_add(
                    u64::try_from(after.saturating_sub(before)).unwrap_or(u64::MAX),
                );
                if after > before {
                    self.rights_epoch += 1;
                }
                changed.push(*key);
                self.persist_dirty.insert(*key);
                // Rights arriving (a grant made under an older policy, a transfer after a
                // call-back) may exceed a lowered quota: look at the tenant again.
                self.quota_tenants.insert(key.tenant);
                if let Some(merged) = self.escrow.get(key) {
                    self.escrow_digest.update(key, merged);
                }
                self.note_consumption(now_ms, *key);
            }
        }
        changed
    }

    pub(super) fn send_counters(&mut self, to: NodeId, buckets: &[u16], want: Vec<u16>) {
        let wanted: BTreeSet<u16> = buckets.iter().copied().collect();
        let mine: Vec<(CounterKey, BoundedCounter)> = self
            .escrow
            .iter()
            .filter(|(key, _)| wanted.contains(&(bucket_of(key) as u16)))
            .map(|(key, counter)| (*key, counter.clone()))
            .collect();
        let batches = self.escrow_batches(mine);
        if batches.is_empty() {
            self.send(
                to,
                Message::EscrowCounters {
                    counters: Vec::new(),
                    want,
                },
            );
            return;
        }
        let mut want = Some(want);
        for counters in batches {
            // Ask for the peer's counters once, with the first batch.
            let ask = want.take().unwrap_or_default();
            self.send(
                to,
                Message::EscrowCounters {
                    counters,
                    want: ask,
                },
            );
        }
    }

    pub(super) fn donate(
        &mut self,
        now_ms: u64,
        from: NodeId,
        request_id: u64,
        key: CounterKey,
        want: u64,
    ) {
        let rights = if self.directory.is_decommissioned(self.id) {
            0
        } else {
            self.local_rights(&key)
        };
        let recently = self
            .given_at
            .get(&(from, key))
            .is_some_and(|at| now_ms.saturating_sub(*at) < self.config.donor_grace_ms);
        let busy = self.is_busy(now_ms, &key);
        // A requester that said goodbye would strand what it is given.
        let leaving = self.peers.get(&from).is_some_and(|p| p.left);
        let giveable = if recently || leaving {
            0
        } else if busy {
            rights.saturating_sub(self.low_water(&key).saturating_mul(2)) / 2
        } else {
            rights.div_ceil(2)
        };
        let mut given = 0;
        if giveable.min(want) > 0 && self.transfer_rights(now_ms, key, from, giveable.min(want)) {
            given = giveable.min(want);
            self.touch(key);
            self.schedule_push(now_ms);
        }
        let counter = self.escrow.get(&key).cloned().unwrap_or_default();
        let budget = self.config.message_bytes_max.saturating_sub(ENVELOPE_BYTES);
        if counter_entry_bytes(&key, &counter) > budget {
            // The reply would be dropped by the transport: the requester times out, and the
            // rights given (if any) reach it by no message either. Counted, as in a push.
            self.stats.counters_oversize += 1;
            return;
        }
        self.send(
            from,
            Message::RightsReply {
                request_id,
                key,
                given,
                counter,
            },
        );
    }

    /// Whether this node consumed for `key` within `donor_busy_ms`: as a giver it keeps a
    /// reserve of its own.
    pub(super) fn is_busy(&self, now_ms: u64, key: &CounterKey) -> bool {
        self.consumed_at
            .get(key)
            .is_some_and(|d| now_ms.saturating_sub(d.last_ms) < self.config.donor_busy_ms)
    }

    /// Transfers `amount` of this node's rights for `key` to `to` and records the gift (the
    /// donor's grace, `rights_given`): what a donation and a rebalancing move share.
    /// Whether the rights moved (this node held them).
    pub(super) fn transfer_rights(
        &mut self,
        now_ms: u64,
        key: CounterKey,
        to: NodeId,
        amount: u64,
    ) -> bool {
        if self
            .escrow
            .counter_mut(key)
            .transfer(self.id, to, amount)
            .is_err()
        {
            return false;
        }
        if self.given_at.insert((to, key), now_ms).is_none() {
            self.given_expiry
                .push(now_ms.saturating_add(self.config.donor_grace_ms), (to, key));
        }
        self.stats.rights_given = self.stats.rights_given.saturating_add(amount);
        true
    }

    /// Starts, times out or retries the rights request for `key` as due.
    /// The rights below which this node asks for more: the configured floor, or what it
    /// will spend in `rights_lead_ms` at its recent rate, whichever is more — so a busy
    /// node asks early enough for the transfer to land before it runs dry.
    pub(super) fn low_water(&self, key: &CounterKey) -> u64 {
        self.low_water_at(self.consumed_at.get(key).map_or(0, Demand::rate))
    }

    /// [`Node::low_water`] for a recent rate of `rate` per second.
    pub(super) fn low_water_at(&self, rate: u64) -> u64 {
        self.config
            .rights_low_water
            .max(rate.saturating_mul(self.config.rights_lead_ms) / 1_000)
    }

    pub(super) fn maybe_request(&mut self, now_ms: u64, key: CounterKey) {
        let rights = self.local_rights(&key);
        let low_water = self.low_water(&key);
        self.maybe_request_with(now_ms, key, rights, low_water);
    }

    /// [`Node::maybe_request`] with the key's local rights and low-water mark known.
    pub(super) fn maybe_request_with(
        &mut self,
        now_ms: u64,
        key: CounterKey,
        rights: u64,
        low_water: u64,
    ) {
        if rights >= low_water || self.leaving {
            // Enough rights: forget the request (a late reply still merges harmlessly).
            if !self.requests.is_empty() {
                self.requests.remove(&key);
            }
            return;
        }
        // Only demand keeps a request going: with no consume here lately, the rights are
        // better left where they are (idle nodes asking each other would pass the last
        // few rights around forever).
        let demand = self
            .consumed_at
            .get(&key)
            .is_some_and(|d| now_ms.saturating_sub(d.last_ms) <= self.config.donor_busy_ms);
        if !demand {
            self.requests.remove(&key);
            return;
        }
        let limit = self.escrow.get(&key).map_or(0, BoundedCounter::limit);
        if limit == 0 {
            // No quota (or lowered to nothing): nothing to ask for.
            self.requests.remove(&key);
            return;
        }
        let mut request = self.requests.remove(&key).unwrap_or(Request {
            in_flight: Vec::new(),
            failures: 0,
            next_try_ms: now_ms,
            empty_donors: BTreeSet::new(),
        });
        self.step_request(now_ms, key, limit, &mut request);
        self.requests.insert(key, request);
    }

    /// Times out, retries or starts the rights requests for `key`: up to
    /// `rights_donors_max` in flight at once, to distinct donors chosen by the rights they
    /// hold in this view (most first), until what they may bring covers the request size.
    /// One donor at a time made collecting a quota spread over many members take O(N)
    /// sequential round trips; a donor gives at most half of what it holds.
    pub(super) fn step_request(
        &mut self,
        now_ms: u64,
        key: CounterKey,
        limit: u64,
        request: &mut Request,
    ) {
        let config = &self.config;
        let timeout_ms = config.rights_request_timeout_ms;
        let before = request.in_flight.len();
        request
            .in_flight
            .retain(|asked| now_ms < asked.sent_ms + timeout_ms);
        if request.in_flight.len() < before {
            // Timed out: a failure; back off (capped exponential, ±50% jitter).
            request.failures += 1;
            request.next_try_ms = retry_at(
                now_ms,
                self.rng.jitter(backoff_ms(config, request.failures), 0.5),
            );
            return;
        }
        if now_ms < request.next_try_ms || request.failures >= config.rights_attempts_max {
            return;
        }
        let want = self.request_size(now_ms, key, limit);
        let mut expected: u64 = request.in_flight.iter().map(|a| a.expected).sum();
        let donors_max = config.rights_donors_max.max(1);
        if request.in_flight.len() >= donors_max || expected >= want {
            return;
        }
        // Donors: reachable members with rights in this view, not known empty, not
        // already asked; connected ones first (a member reached through the mesh's gossip
        // alone costs the transport a dial), then most rights first.
        let counter = self.escrow.get(&key);
        let mut donors: Vec<(bool, u64, NodeId)> = self
            .peers
            .iter()
            .filter(|(id, _)| {
                !request.empty_donors.contains(id)
                    && !request.in_flight.iter().any(|a| a.donor == **id)
                    && self.reachable(**id, now_ms)
            })
            .map(|(id, p)| {
                let rights = counter.map_or(0, |c| c.local_rights(*id));
                (p.connected, rights, *id)
            })
            .filter(|(_, rights, _)| *rights > 0)
            .collect();
        if donors.is_empty() {
            if request.in_flight.is_empty() {
                // Nobody reachable is known to hold rights (or every donor just said no,
                // say within its grace period): a failure, so look again after a backoff
                // (a push or an anti-entropy round may change the view meanwhile).
                request.empty_donors.clear();
                request.failures += 1;
                request.next_try_ms = retry_at(
                    now_ms,
                    self.rng.jitter(backoff_ms(config, request.failures), 0.5),
                );
            }
            return;
        }
        donors.sort_unstable_by(|a, b| b.cmp(a));
        for (_, rights, donor) in donors {
            if request.in_flight.len() >= donors_max || expected >= want {
                break;
            }
            let config = &self.config;
            let retry = request.failures > 0 || !request.empty_donors.is_empty();
            let parallel = !request.in_flight.is_empty();
            if retry || parallel {
                // A retry, or a second donor at once: spend from the retry budget, a
                // token bucket refilled per second.
                let capacity = f64::from(config.rights_retry_budget_per_s);
                let elapsed_s = now_ms.saturating_sub(self.tokens_at_ms) as f64 / 1000.0;
                self.retry_tokens = (self.retry_tokens + elapsed_s * capacity).min(capacity);
                self.tokens_at_ms = now_ms;
                if self.retry_tokens < 1.0 {
                    if request.in_flight.is_empty() {
                        request.next_try_ms = retry_at(
                            now_ms,
                            1000 / u64::from(config.rights_retry_budget_per_s.max(1)),
                        );
                    }
                    return;
                }
                self.retry_tokens -= 1.0;
                if retry {
                    self.stats.rights_retries += 1;
                }
            }
            let ask = want - expected;
            let id = self.next_request_id;
            self.next_request_id += 1;
            let asked = Asked {
                id,
                donor,
                sent_ms: now_ms,
                expected: ask.min(rights.div_ceil(2)),
            };
            expected += asked.expected;
            request.in_flight.push(asked);
            self.stats.rights_requests_sent += 1;
            self.send(
                donor,
                Message::RightsRequest {
                    request_id: id,
                    key,
                    want: ask,
                },
            );
        }
    }

    /// Whether a request to `node` can be expected to arrive: it is connected, or, never
    /// lost by the transport since, alive by gossip (a member outside this node's mesh:
    /// the transport dials it). One the transport saw go stays out until it is heard of
    /// again after that. With `mesh_peers` 0 (a fixed topology: the bootstrap list only),
    /// only connected peers.
    pub(super) fn reachable(&self, node: NodeId, now_ms: u64) -> bool {
        let Some(view) = self.peers.get(&node) else {
            return false;
        };
        if view.left || self.directory.is_decommissioned(node) {
            return false;
        }
        view.connected
            || (self.config.mesh_peers > 0
                && self.liveness(node, now_ms) == Liveness::Alive
                && self.membership.alive_at_ms(node) > view.disconnected_ms)
    }

    /// Members a request could reach now (see [`Node::reachable`]), this node not counted.
    pub(super) fn reachable_members(&self, now_ms: u64) -> usize {
        self.peers
            .keys()
            .filter(|node| self.reachable(**node, now_ms))
            .count()
    }

    /// How much a rights request for `key` asks for: the configured least, what this node
    /// spends in `rights_request_cover_ms` at its recent rate, or half a fair share of the
    /// limit among the live members, whichever is most. Demand, not fleet size, sets it:
    /// at 200 members a fair share is small, and a busy node asking for it would need
    /// O(N) round trips to collect a quota.
    pub(super) fn request_size(&self, now_ms: u64, key: CounterKey, limit: u64) -> u64 {
        let rate = self.consumed_at.get(&key).map_or(0, Demand::rate);
        let cover = rate.saturating_mul(self.config.rights_request_cover_ms) / 1_000;
        let members = self.reachable_members(now_ms) as u64 + 1;
        self.config
            .rights_request_min
            .max(cover)
            .max(limit / (2 * members))
    }
}
