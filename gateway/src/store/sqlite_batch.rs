//! The batch operations of [`Store`](super::Store) on SQLite: a batch of
//! received envelopes and the outcomes of a batch sent are each one write
//! transaction, so one commit and one (group) fsync cover all of them.

use super::domain;
use super::settlement::{recorded, SettleStep};
use super::sqlite::{insert_inbox_tx, record_failure_tx, settle, SqliteStore};
use super::{InboxItem, Inserted, Lease, NewInboxItem, Settlement, StoreError};
use time::OffsetDateTime;

impl SqliteStore {
    /// [`Store::insert_inbox_batch`](super::Store::insert_inbox_batch):
    /// items are inserted in order in one transaction, so each sees the
    /// ones before it and their cursors follow request order.
    pub(super) fn insert_inbox_batch_tx(
        &self,
        items: Vec<NewInboxItem>,
    ) -> Result<Vec<Inserted<InboxItem>>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for item in &items {
            domain::validate_inbox(item)?;
        }
        self.write(|tx| items.into_iter().map(|item| insert_inbox_tx(tx, item)).collect())
    }

    /// [`Store::settle_batch`](super::Store::settle_batch) in one
    /// transaction, every settle fenced by `lease`.
    pub(super) fn settle_batch_tx(
        &self,
        lease: &Lease,
        outcomes: &[Settlement],
        at: OffsetDateTime,
    ) -> Result<Vec<bool>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            outcomes
                .iter()
                .map(|s| {
                    let id = s.exchange_id.as_str();
                    recorded(match s.outcome.step() {
                        SettleStep::Terminal { transition, problem } => {
                            settle(tx, lease, id, transition, problem, at)
                        }
                        SettleStep::Reschedule {
                            error,
                            next_attempt_at,
                        } => record_failure_tx(tx, lease, id, error, at, next_attempt_at),
                    })
                })
                .collect()
        })
    }
}
