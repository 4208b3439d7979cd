//! Replies that fit one frame.
//!
//! A reply goes back as one frame, whose body we keep within
//! [`DhtConfig::max_reply_bytes`](super::DhtConfig::max_reply_bytes) (64
//! KiB by default, never more than the protocol's 1 MiB `max_frame_len`).
//! A key may hold 64 records of 16 KiB, more than a frame carries, so an
//! answer is cut to fit:
//! contacts first (closest first, a few hundred bytes each), then records,
//! smallest first, so a handful of large records cannot crowd out many
//! small ones. A FIND_VALUE reply says how many records it left out.
//!
//! The sizes are those of docs/PROTOCOL.md §4 and §8.4 (the node's codec
//! tests check that they agree with the encoder).

use crate::record::SignedRecord;

use super::message::Contact;

/// Bytes of a request id.
const REQUEST_ID: usize = 8;
/// Bytes of a list's item count.
const COUNT: usize = 2;
/// Bytes of FIND_VALUE_REPLY's `omitted` field.
const OMITTED: usize = 2;

/// Encoded bytes of one contact: id, address count, each address (family,
/// IP, port).
pub fn contact_len(contact: &Contact) -> usize {
    let addrs: usize = (contact.addrs.iter())
        .map(|a| 1 + if a.is_ipv4() { 4 } else { 16 } + 2)
        .sum();
    32 + COUNT + addrs
}

/// Encoded bytes of one signed record.
pub fn record_len(record: &SignedRecord) -> usize {
    32 + 32 + 8 + 4 + 4 + record.value.len() + 64
}

/// Keeps the leading `contacts` that fit in `budget` bytes; returns the
/// bytes they take.
fn cut_contacts(contacts: &mut Vec<Contact>, budget: usize) -> usize {
    let mut used = 0;
    let keep = contacts
        .iter()
        .take_while(|c| {
            used += contact_len(c);
            used <= budget
        })
        .count();
    contacts.truncate(keep);
    contacts.iter().map(contact_len).sum()
}

/// Cuts a FIND_NODE reply's contacts to fit a frame body of `max` bytes;
/// returns whether any were left out.
pub fn fit_nodes(closer: &mut Vec<Contact>, max: usize) -> bool {
    let before = closer.len();
    cut_contacts(closer, max.saturating_sub(REQUEST_ID + COUNT));
    closer.len() < before
}

/// Cuts a FIND_VALUE reply to fit a frame body of `max` bytes: the
/// contacts first, then the records, smallest first. Returns the records
/// kept and how many were left out.
pub fn fit_value(
    mut records: Vec<SignedRecord>,
    closer: &mut Vec<Contact>,
    max: usize,
) -> (Vec<SignedRecord>, usize) {
    let fixed = REQUEST_ID + COUNT + OMITTED + COUNT;
    let room = max.saturating_sub(fixed);
    let room = room - cut_contacts(closer, room);
    records.sort_by_cached_key(|r| (record_len(r), r.provider()));
    let mut used = 0;
    let keep = records
        .iter()
        .take_while(|r| {
            used += record_len(r);
            used <= room
        })
        .count();
    let omitted = records.len() - keep;
    records.truncate(keep);
    (records, omitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Identity, NodeId, RecordKey};
    use bytes::Bytes;

    fn record(seed: u8, len: usize) -> SignedRecord {
        let identity = Identity::from_seed([seed; 32]);
        let value = Bytes::from(vec![seed; len]);
        SignedRecord::sign(&identity, RecordKey::from_bytes([7; 32]), value, 1, 300)
    }

    fn contact(n: u8) -> Contact {
        Contact::new(
            NodeId::from_bytes([n; 32]),
            ([198, 51, 100, n], 4433).into(),
        )
    }

    #[test]
    fn large_records_go_first_and_are_counted() {
        let records = vec![
            record(1, 1000),
            record(2, 10),
            record(3, 500),
            record(4, 20),
        ];
        let mut closer = vec![contact(1), contact(2)];
        let contacts = 2 * contact_len(&contact(1));
        let small = record_len(&record(2, 10)) + record_len(&record(4, 20));
        let max = 14 + contacts + small + record_len(&record(3, 500));
        let (kept, omitted) = fit_value(records.clone(), &mut closer, max);
        assert_eq!(omitted, 1);
        let sizes: Vec<usize> = kept.iter().map(|r| r.value.len()).collect();
        assert_eq!(sizes, [10, 20, 500]);
        assert_eq!(closer.len(), 2);
        let (kept, omitted) = fit_value(records.clone(), &mut closer, max - 1);
        assert_eq!((kept.len(), omitted), (2, 2));
        let (kept, omitted) = fit_value(records, &mut closer, 1 << 20);
        assert_eq!((kept.len(), omitted), (4, 0));
    }

    #[test]
    fn contacts_are_cut_from_the_far_end() {
        let mut closer: Vec<Contact> = (1..=20).map(contact).collect();
        let one = contact_len(&contact(1));
        assert!(!fit_nodes(&mut closer, 10 + 20 * one));
        assert!(fit_nodes(&mut closer, 10 + 5 * one + one / 2));
        let ids: Vec<NodeId> = closer.iter().map(|c| c.id).collect();
        let want: Vec<NodeId> = (1..=5).map(|n| contact(n).id).collect();
        assert_eq!(ids, want);
        let (kept, omitted) = fit_value(vec![record(1, 1)], &mut closer, 0);
        assert_eq!((kept.len(), omitted, closer.len()), (0, 1, 0));
    }
}
