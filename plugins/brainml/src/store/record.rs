//! How log records are encoded. Upserts are binary (vectors as little-endian f32: no float
//! parsing at reopen); deletes, and every record written before the binary form existed, are
//! JSON. The first byte tells them apart: JSON records start with `{`, binary ones with a
//! tag byte that never starts JSON.
//!
//! A binary upsert: `[0xB1][flags][u32 docs]`, then per document `[u32 len][id]`,
//! `[u32 len][metadata JSON, empty for {}]`, `[u32 chunks]`, then per chunk (`[u32 slot]` when
//! flag bit 0 is set: a compacted log places chunks in the slots they held),
//! `[u32 len][text]` (len `u32::MAX`: no text), `[u32 dim][dim x f32]`. All integers are
//! little endian.
//!
//! A layout record `[0xB2][u32 slots][u32 free][free x u32]` starts a compacted log: the
//! number of chunk slots and the order of the free ones, so that the slots after a reopen
//! are the slots before it.

use serde_json::{Map, Value};

use super::collection::{ChunkRecord, DocRecord, Record};

pub const UPSERT: u8 = 0xB1;
pub const LAYOUT: u8 = 0xB2;
const PLACED: u8 = 1;
const NO_TEXT: u32 = u32::MAX;

/// One decoded log record.
#[derive(Debug)]
pub enum Entry {
    /// An upsert or a delete as a call wrote it.
    Record(Record),
    /// The start of a compacted log: this many slots, these free (in this order).
    Layout { slots: usize, free: Vec<usize> },
    /// Documents whose chunks go back into the slots they held (a compacted log).
    Placed { docs: Vec<(DocRecord, Vec<usize>)> },
}

/// Builds one binary upsert record.
pub struct Writer {
    buf: Vec<u8>,
    placed: bool,
    docs: u32,
}

impl Writer {
    /// `placed`: every chunk names its slot.
    pub fn new(placed: bool) -> Writer {
        let mut buf = Vec::with_capacity(4096);
        buf.push(UPSERT);
        buf.push(if placed { PLACED } else { 0 });
        buf.extend_from_slice(&0u32.to_le_bytes());
        Writer { buf, placed, docs: 0 }
    }

    fn u32(&mut self, n: usize) {
        self.buf.extend_from_slice(&(n as u32).to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len());
        self.buf.extend_from_slice(b);
    }

    pub fn doc(&mut self, id: &str, metadata: &Map<String, Value>, chunks: usize) {
        self.docs += 1;
        self.bytes(id.as_bytes());
        if metadata.is_empty() {
            self.u32(0);
        } else {
            let json = serde_json::to_vec(metadata).unwrap_or_else(|_| b"{}".to_vec());
            self.bytes(&json);
        }
        self.u32(chunks);
    }

    pub fn chunk(&mut self, slot: Option<usize>, text: Option<&str>, vector: &[f32]) {
        if self.placed {
            self.u32(slot.unwrap_or(u32::MAX as usize));
        }
        match text {
            Some(t) => self.bytes(t.as_bytes()),
            None => self.buf.extend_from_slice(&NO_TEXT.to_le_bytes()),
        }
        self.u32(vector.len());
        self.buf.reserve(vector.len() * 4);
        for x in vector {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs == 0
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[2..6].copy_from_slice(&self.docs.to_le_bytes());
        self.buf
    }
}

/// The payload of `record`: binary for an upsert, JSON for a delete.
pub fn encode(record: &Record) -> Vec<u8> {
    match record {
        Record::Upsert { docs } => {
            let mut w = Writer::new(false);
            for d in docs {
                w.doc(&d.id, &d.metadata, d.chunks.len());
                for c in &d.chunks {
                    w.chunk(None, c.text.as_deref(), &c.vector);
                }
            }
            w.finish()
        }
        Record::Delete { .. } => serde_json::to_vec(record).unwrap_or_default(),
    }
}

/// The layout record that starts a compacted log.
pub fn encode_layout(slots: usize, free: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + free.len() * 4);
    out.push(LAYOUT);
    out.extend_from_slice(&(slots as u32).to_le_bytes());
    out.extend_from_slice(&(free.len() as u32).to_le_bytes());
    for s in free {
        out.extend_from_slice(&(*s as u32).to_le_bytes());
    }
    out
}

/// About the bytes a document takes in a compacted log (to tell when the log holds much dead
/// data).
pub fn doc_bytes(d: &DocRecord) -> u64 {
    let meta = if d.metadata.is_empty() {
        0
    } else {
        serde_json::to_vec(&d.metadata).map_or(0, |v| v.len())
    };
    let chunks: usize = d
        .chunks
        .iter()
        .map(|c| 12 + c.text.as_ref().map_or(0, String::len) + c.vector.len() * 4)
        .sum();
    (12 + d.id.len() + meta + chunks) as u64
}

struct Reader<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.p.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str(&mut self, len: u32) -> Option<String> {
        let b = self.take(len as usize)?;
        std::str::from_utf8(b).ok().map(str::to_owned)
    }
}

/// Decode a payload; `None` for one that is neither a JSON record nor a whole binary one.
pub fn decode(p: &[u8]) -> Option<Entry> {
    match *p.first()? {
        b'{' => serde_json::from_slice::<Record>(p).ok().map(Entry::Record),
        UPSERT => decode_upsert(p),
        LAYOUT => {
            let mut r = Reader { p, at: 1 };
            let slots = r.u32()? as usize;
            let n = r.u32()? as usize;
            let raw = r.take(n.checked_mul(4)?)?;
            let free = raw
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .collect::<Vec<_>>();
            (r.at == p.len() && free.iter().all(|s| *s < slots))
                .then_some(Entry::Layout { slots, free })
        }
        _ => None,
    }
}

fn decode_upsert(p: &[u8]) -> Option<Entry> {
    let mut r = Reader { p, at: 1 };
    let flags = *r.take(1)?.first()?;
    let placed = flags & PLACED != 0;
    let n = r.u32()? as usize;
    let mut docs = Vec::with_capacity(n.min(p.len() / 12));
    for _ in 0..n {
        let len = r.u32()?;
        let id = r.str(len)?;
        let len = r.u32()? as usize;
        let metadata = if len == 0 {
            Map::new()
        } else {
            serde_json::from_slice::<Map<String, Value>>(r.take(len)?).ok()?
        };
        let chunks = r.u32()? as usize;
        let mut out = Vec::with_capacity(chunks.min(p.len() / 8));
        let mut slots = Vec::new();
        for _ in 0..chunks {
            if placed {
                slots.push(r.u32()? as usize);
            }
            let len = r.u32()?;
            let text = if len == NO_TEXT { None } else { Some(r.str(len)?) };
            let dim = r.u32()? as usize;
            let raw = r.take(dim.checked_mul(4)?)?;
            let vector = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>();
            out.push(ChunkRecord { text, vector });
        }
        docs.push((DocRecord { id, metadata, chunks: out }, slots));
    }
    if r.at != p.len() {
        return None;
    }
    Some(if placed {
        Entry::Placed { docs }
    } else {
        Entry::Record(Record::Upsert { docs: docs.into_iter().map(|(d, _)| d).collect() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(id: &str, text: Option<&str>, vectors: &[&[f32]]) -> DocRecord {
        let metadata = match json!({ "lang": "en", "n": 3, "ok": true }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        DocRecord {
            id: id.into(),
            metadata,
            chunks: vectors
                .iter()
                .map(|v| ChunkRecord { text: text.map(str::to_owned), vector: v.to_vec() })
                .collect(),
        }
    }

    #[test]
    fn a_binary_upsert_round_trips_exactly() {
        let docs = vec![
            doc(
                "a",
                Some("the first text, ünïcode"),
                &[&[0.1, -2.5e-8, f32::MAX], &[1.0, 0.0, -0.0]],
            ),
            doc("b", None, &[&[3.25, 4.5, -1.0]]),
            DocRecord { id: "empty".into(), metadata: Map::new(), chunks: vec![] },
        ];
        let payload = encode(&Record::Upsert { docs });
        assert_eq!(payload[0], UPSERT);
        let Some(Entry::Record(Record::Upsert { docs: back })) = decode(&payload) else {
            panic!("not an upsert")
        };
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].id, "a");
        assert_eq!(back[0].metadata, doc("x", None, &[]).metadata);
        assert_eq!(back[0].chunks[0].text.as_deref(), Some("the first text, ünïcode"));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back[0].chunks[0].vector), bits(&[0.1, -2.5e-8, f32::MAX]));
        assert_eq!(bits(&back[0].chunks[1].vector), bits(&[1.0, 0.0, -0.0]));
        assert_eq!(back[1].chunks[0].text, None);
        assert!(back[2].metadata.is_empty() && back[2].chunks.is_empty());
        // Every shorter prefix and a longer payload are refused, never misread.
        for n in 0..payload.len() {
            assert!(decode(&payload[..n]).is_none(), "a prefix of {n} bytes decoded");
        }
        let mut longer = payload.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
    }

    #[test]
    fn json_records_of_the_first_format_still_decode() {
        let old = br#"{"op":"upsert","docs":[{"id":"x","metadata":{"k":"v"},"chunks":[{"text":"t","vector":[0.5,0.25]}]}]}"#;
        let Some(Entry::Record(Record::Upsert { docs })) = decode(old) else { panic!() };
        assert_eq!(docs[0].chunks[0].vector, [0.5, 0.25]);
        let Some(Entry::Record(Record::Delete { ids })) = decode(br#"{"op":"delete","ids":["x"]}"#)
        else {
            panic!()
        };
        assert_eq!(ids, ["x"]);
        assert!(decode(b"").is_none() && decode(b"[1]").is_none() && decode(&[0xB3]).is_none());
    }

    #[test]
    fn placed_records_and_the_layout_round_trip() {
        let mut w = Writer::new(true);
        w.doc("d", &Map::new(), 2);
        w.chunk(Some(7), Some("seven"), &[1.0]);
        w.chunk(Some(2), None, &[2.0]);
        let Some(Entry::Placed { docs }) = decode(&w.finish()) else { panic!() };
        assert_eq!(docs[0].1, [7, 2]);
        assert_eq!(docs[0].0.chunks[1].vector, [2.0]);
        let Some(Entry::Layout { slots, free }) = decode(&encode_layout(9, &[4, 1])) else {
            panic!()
        };
        assert_eq!((slots, free), (9, vec![4, 1]));
        assert!(decode(&encode_layout(3, &[4])).is_none(), "a free slot past the end");
    }
}
