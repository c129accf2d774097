//! One binlog event as the server wrote it: its exact bytes (rebuilt from what mysql_common
//! parsed, then checked against the event's own size and CRC32) and the few fields the archive
//! index needs, decoded here because mysql_common does not know MariaDB's event types.

use coffer_api::gtid::{Gtid, GtidState, Uuid};

/// Event types (`Log_event_type`) the capture looks at.
pub mod kind {
    pub const STOP: u8 = 3;
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const HEARTBEAT: u8 = 27;
    pub const XA_PREPARE: u8 = 38;
    /// MySQL: a transaction's GTID (source UUID and GNO).
    pub const MYSQL_GTID: u8 = 33;
    /// MySQL: a transaction logged without a GTID (gtid_mode not ON when it was written).
    pub const MYSQL_ANONYMOUS_GTID: u8 = 34;
    /// MySQL: the GTID set before a binlog file's first transaction (like GTID_LIST).
    pub const MYSQL_PREVIOUS_GTIDS: u8 = 35;
    /// MySQL 8.0.20+: a compressed transaction (binlog_transaction_compression).
    pub const MYSQL_TRANSACTION_PAYLOAD: u8 = 40;
    /// MySQL 8.0.26+: a heartbeat with a 64-bit position.
    pub const MYSQL_HEARTBEAT_V2: u8 = 41;
    /// MySQL 8.3+: a GTID with a tag.
    pub const MYSQL_GTID_TAGGED: u8 = 42;
    pub const BINLOG_CHECKPOINT: u8 = 161;
    pub const GTID: u8 = 162;
    pub const GTID_LIST: u8 = 163;
    pub const START_ENCRYPTION: u8 = 164;
    pub const QUERY_COMPRESSED: u8 = 165;
}

pub const HEADER_LEN: usize = 19;
/// `LOG_EVENT_ARTIFICIAL_F`: made up by the dump thread, not in any binlog file.
pub const FLAG_ARTIFICIAL: u16 = 0x20;
/// `LOG_EVENT_BINLOG_IN_USE_F`, on the FDE of a binlog still being written; the CRC is
/// computed without it.
pub const FLAG_IN_USE: u16 = 0x01;
/// GTID event `flags2`: the group has no terminating COMMIT/XID (a DDL statement).
pub const GTID_STANDALONE: u8 = 0x01;

/// CRC-32 (IEEE, reflected), the binlog checksum.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The common 19-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub timestamp: u32,
    pub kind: u8,
    pub server_id: u32,
    pub size: u32,
    /// End position of the event in the source's binlog file (0 for some artificial ones).
    pub log_pos: u32,
    pub flags: u16,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            timestamp: le32(&b[0..]),
            kind: b[4],
            server_id: le32(&b[5..]),
            size: le32(&b[9..]),
            log_pos: le32(&b[13..]),
            flags: u16::from_le_bytes([b[17], b[18]]),
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.push(self.kind);
        out.extend_from_slice(&self.server_id.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.log_pos.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
    }

    pub fn artificial(&self) -> bool {
        self.flags & FLAG_ARTIFICIAL != 0
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// An event's exact bytes, checksum included, and its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub header: Header,
    pub bytes: Vec<u8>,
}

/// Why an event's bytes cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    Size {
        kind: u8,
        expected: u32,
        got: usize,
    },
    Crc {
        kind: u8,
        log_pos: u32,
        stored: u32,
        computed: u32,
    },
    Short {
        kind: u8,
    },
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Size {
                kind,
                expected,
                got,
            } => write!(
                f,
                "event of type {kind} rebuilt to {got} bytes, its header says {expected}"
            ),
            Bad::Crc {
                kind,
                log_pos,
                stored,
                computed,
            } => write!(
                f,
                "CRC32 mismatch on the event of type {kind} ending at source position \
                 {log_pos}: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Bad::Short { kind } => write!(f, "event of type {kind} is too short to decode"),
        }
    }
}

impl RawEvent {
    /// Rebuilds `header ‖ data ‖ [checksum algorithm byte of an FDE] ‖ checksum`, the bytes
    /// the server sent, and verifies their length and CRC32. `crc` says whether the event
    /// carries one (every event does once the FDE announced CRC32; the first fake Rotate
    /// carries one too, inside `data`, because mysql_common has no FDE yet).
    pub fn rebuild(
        header: Header,
        data: &[u8],
        fde_alg: Option<u8>,
        checksum: Option<[u8; 4]>,
    ) -> Result<RawEvent, Bad> {
        let mut bytes = Vec::with_capacity(header.size as usize);
        header.write(&mut bytes);
        bytes.extend_from_slice(data);
        if let Some(alg) = fde_alg {
            bytes.push(alg);
        }
        if let Some(c) = checksum {
            bytes.extend_from_slice(&c);
        }
        if bytes.len() != header.size as usize {
            return Err(Bad::Size {
                kind: header.kind,
                expected: header.size,
                got: bytes.len(),
            });
        }
        Ok(RawEvent { header, bytes })
    }

    /// Checks the trailing CRC32 (the FDE's in-use flag is not part of it).
    pub fn verify_crc(&self) -> Result<(), Bad> {
        let n = self.bytes.len();
        if n < HEADER_LEN + 4 {
            return Err(Bad::Short {
                kind: self.header.kind,
            });
        }
        let stored = le32(&self.bytes[n - 4..]);
        let computed = if self.header.flags & FLAG_IN_USE != 0 {
            let mut b = self.bytes[..n - 4].to_vec();
            b[17] &= !(FLAG_IN_USE as u8);
            crc32(&b)
        } else {
            crc32(&self.bytes[..n - 4])
        };
        if stored != computed {
            return Err(Bad::Crc {
                kind: self.header.kind,
                log_pos: self.header.log_pos,
                stored,
                computed,
            });
        }
        Ok(())
    }

    /// The body between the header and the checksum (`crc`: whether there is one).
    pub fn body(&self, crc: bool) -> &[u8] {
        let end = self.bytes.len() - if crc { 4 } else { 0 };
        &self.bytes[HEADER_LEN.min(end)..end]
    }

    /// The event type-specific bytes, without checksum, for an event with one.
    fn payload(&self) -> &[u8] {
        self.body(true)
    }

    /// A MariaDB GTID event: its GTID (the server id comes from the header) and `flags2`.
    pub fn gtid(&self) -> Result<(Gtid, u8), Bad> {
        let p = self.payload();
        if p.len() < 13 {
            return Err(Bad::Short {
                kind: self.header.kind,
            });
        }
        Ok((
            Gtid::mariadb(le32(&p[8..]), self.header.server_id, le64(&p[0..])),
            p[12],
        ))
    }

    /// A MySQL GTID event's GTID: the body starts with a flags byte, the source UUID (16
    /// bytes) and the GNO (i64, little-endian).
    pub fn mysql_gtid(&self) -> Result<Gtid, Bad> {
        let p = self.payload();
        let short = Bad::Short {
            kind: self.header.kind,
        };
        let sid: [u8; 16] = p
            .get(1..17)
            .ok_or(short.clone())?
            .try_into()
            .expect("16 bytes");
        let gno = i64::from_le_bytes(p.get(17..25).ok_or(short.clone())?.try_into().expect("8"));
        if gno < 1 {
            return Err(short);
        }
        Ok(Gtid::mysql(Uuid(sid), gno as u64))
    }

    /// A GTID_LIST event's state.
    pub fn gtid_list(&self) -> Result<GtidState, Bad> {
        let p = self.payload();
        let short = Bad::Short {
            kind: self.header.kind,
        };
        if p.len() < 4 {
            return Err(short);
        }
        let count = (le32(p) & 0x0fff_ffff) as usize;
        let mut st = GtidState::default();
        for i in 0..count {
            let e = p.get(4 + i * 16..4 + (i + 1) * 16).ok_or(short.clone())?;
            st.advance(Gtid::mariadb(le32(&e[0..]), le32(&e[4..]), le64(&e[8..])));
        }
        Ok(st)
    }

    /// A Rotate event's target: (position, file name).
    pub fn rotate(&self) -> Result<(u64, String), Bad> {
        let p = self.payload();
        if p.len() < 8 {
            return Err(Bad::Short {
                kind: self.header.kind,
            });
        }
        Ok((le64(p), String::from_utf8_lossy(&p[8..]).into_owned()))
    }

    /// A Query event's statement text (the fixed part is 13 bytes in every MariaDB/MySQL
    /// since 5.0), or None for a compressed one.
    pub fn query_text(&self) -> Option<&[u8]> {
        if self.header.kind != kind::QUERY {
            return None;
        }
        let p = self.payload();
        let db_len = *p.get(8)? as usize;
        let status_len = u16::from_le_bytes([*p.get(11)?, *p.get(12)?]) as usize;
        p.get(13 + status_len + db_len + 1..)
    }
}

/// Builds the artificial Rotate a segment starts with, naming the source file and the
/// position its first event starts at: what a relay log has there (without it the 10.11 SQL
/// thread crashes on the file, pitr.md §4) and what `mariadb-binlog` shows as the source.
pub fn artificial_rotate(server_id: u32, file: &str, pos: u64, crc: bool) -> Vec<u8> {
    let size = HEADER_LEN + 8 + file.len() + if crc { 4 } else { 0 };
    let mut b = Vec::with_capacity(size);
    Header {
        timestamp: 0,
        kind: kind::ROTATE,
        server_id,
        size: size as u32,
        log_pos: 0,
        flags: FLAG_ARTIFICIAL,
    }
    .write(&mut b);
    b.extend_from_slice(&pos.to_le_bytes());
    b.extend_from_slice(file.as_bytes());
    if crc {
        let c = crc32(&b);
        b.extend_from_slice(&c.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    fn event(kind_: u8, flags: u16, payload: &[u8]) -> RawEvent {
        let size = (HEADER_LEN + payload.len() + 4) as u32;
        let mut b = Vec::new();
        Header {
            timestamp: 1_700_000_000,
            kind: kind_,
            server_id: 11,
            size,
            log_pos: 1234,
            flags,
        }
        .write(&mut b);
        b.extend_from_slice(payload);
        let c = crc32(&b);
        b.extend_from_slice(&c.to_le_bytes());
        RawEvent {
            header: Header::parse(&b).unwrap(),
            bytes: b,
        }
    }

    #[test]
    fn rebuild_checks_the_size_and_the_crc() {
        let e = event(kind::XID, 0, &7u64.to_le_bytes());
        let data = &e.bytes[HEADER_LEN..e.bytes.len() - 4];
        let crc: [u8; 4] = e.bytes[e.bytes.len() - 4..].try_into().unwrap();
        let again = RawEvent::rebuild(e.header, data, None, Some(crc)).unwrap();
        assert_eq!(again, e);
        again.verify_crc().unwrap();
        // A lost byte is a size error; a flipped one a CRC error.
        assert!(matches!(
            RawEvent::rebuild(e.header, &data[1..], None, Some(crc)),
            Err(Bad::Size { .. })
        ));
        let mut flipped = e.clone();
        flipped.bytes[HEADER_LEN] ^= 1;
        assert!(matches!(flipped.verify_crc(), Err(Bad::Crc { .. })));
    }

    #[test]
    fn the_in_use_flag_is_not_part_of_the_crc() {
        let e = event(kind::FORMAT_DESCRIPTION, 0, b"fde body");
        let mut in_use = e.clone();
        in_use.bytes[17] |= FLAG_IN_USE as u8;
        in_use.header.flags |= FLAG_IN_USE;
        in_use.verify_crc().unwrap();
    }

    #[test]
    fn gtid_gtid_list_rotate_and_query_decode() {
        let mut p = 42u64.to_le_bytes().to_vec();
        p.extend_from_slice(&100u32.to_le_bytes());
        p.push(GTID_STANDALONE);
        let (g, f2) = event(kind::GTID, 0, &p).gtid().unwrap();
        assert_eq!((g.to_string(), f2), ("100-11-42".to_string(), 1));

        let mut p = 2u32.to_le_bytes().to_vec();
        for (d, s, q) in [(0u32, 1u32, 5u64), (7, 2, 9)] {
            p.extend_from_slice(&d.to_le_bytes());
            p.extend_from_slice(&s.to_le_bytes());
            p.extend_from_slice(&q.to_le_bytes());
        }
        let st = event(kind::GTID_LIST, 0, &p).gtid_list().unwrap();
        assert_eq!(st.to_string(), "0-1-5,7-2-9");
        assert!(event(kind::GTID_LIST, 0, &p[..20]).gtid_list().is_err());

        let mut p = 4u64.to_le_bytes().to_vec();
        p.extend_from_slice(b"mysql-bin.000002");
        let (pos, name) = event(kind::ROTATE, 0, &p).rotate().unwrap();
        assert_eq!((pos, name.as_str()), (4, "mysql-bin.000002"));

        let mut p = vec![0u8; 13];
        p[8] = 2; // db "db"
        p[11] = 3; // three bytes of status variables
        p.extend_from_slice(&[9, 9, 9]);
        p.extend_from_slice(b"db\0COMMIT");
        assert_eq!(event(kind::QUERY, 0, &p).query_text(), Some(&b"COMMIT"[..]));
    }

    #[test]
    fn mysql_gtids_decode() {
        let sid: [u8; 16] = core::array::from_fn(|i| 0x10 + i as u8);
        let mut p = vec![1u8];
        p.extend_from_slice(&sid);
        p.extend_from_slice(&42i64.to_le_bytes());
        p.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0]); // lt_type, last_committed, ...
        let g = event(kind::MYSQL_GTID, 0, &p).mysql_gtid().unwrap();
        assert_eq!(g.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f:42");
        assert_eq!(g.server, 0);
        assert!(event(kind::MYSQL_GTID, 0, &p[..20]).mysql_gtid().is_err());
        let mut zero = p.clone();
        zero[17..25].copy_from_slice(&0i64.to_le_bytes());
        assert!(event(kind::MYSQL_GTID, 0, &zero).mysql_gtid().is_err());
    }

    #[test]
    fn the_artificial_rotate_is_a_valid_event() {
        let b = artificial_rotate(11, "mysql-bin.000003", 330, true);
        let h = Header::parse(&b).unwrap();
        assert_eq!(h.size as usize, b.len());
        assert!(h.artificial());
        let e = RawEvent {
            header: h,
            bytes: b,
        };
        e.verify_crc().unwrap();
        assert_eq!(e.rotate().unwrap(), (330, "mysql-bin.000003".to_string()));
    }
}
