//! The xbstream/mbstream archive format, as far as coffer needs it: finding a small file's
//! content in a stage-1 archive, and recognising a complete backup stream by its end.

/// A complete mariabackup/xtrabackup stream ends with the end-of-file chunk of
/// `xtrabackup_info`: magic, flags, type 'E', path length, path.
pub fn ends_complete(tail: &[u8]) -> bool {
    const NAME: &[u8] = b"xtrabackup_info";
    let n = 8 + 1 + 1 + 4 + NAME.len();
    if tail.len() < n {
        return false;
    }
    let c = &tail[tail.len() - n..];
    &c[..8] == b"XBSTCK01"
        && c[9] == b'E'
        && u32::from_le_bytes([c[10], c[11], c[12], c[13]]) as usize == NAME.len()
        && &c[14..] == NAME
}

/// The content of `path` in a (small) xbstream archive held in memory.
pub fn file_content(archive: &[u8], path: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0usize;
    while i + 14 <= archive.len() {
        if &archive[i..i + 8] != b"XBSTCK01" {
            return out;
        }
        let kind = archive[i + 9];
        let plen = u32::from_le_bytes(archive[i + 10..i + 14].try_into().ok()?) as usize;
        let name = archive.get(i + 14..i + 14 + plen)?;
        i += 14 + plen;
        match kind {
            b'E' => {}
            b'P' => {
                let len = u64::from_le_bytes(archive.get(i..i + 8)?.try_into().ok()?) as usize;
                // payload length, offset, checksum, then the data
                let data = archive.get(i + 20..i + 20 + len)?;
                if name == path.as_bytes() {
                    out.get_or_insert_with(Vec::new).extend_from_slice(data);
                }
                i += 20 + len;
            }
            _ => return out,
        }
    }
    out
}

/// `uuid:seqno` (and an optional GTID domain) from an xtrabackup_galera_info file.
pub fn galera_position(text: &str) -> Option<(String, i64)> {
    let first = text.split_whitespace().next()?;
    let (uuid, seqno) = first.rsplit_once(':')?;
    Some((uuid.to_string(), seqno.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: u8, path: &str, data: &[u8]) -> Vec<u8> {
        let mut v = b"XBSTCK01".to_vec();
        v.push(0);
        v.push(kind);
        v.extend_from_slice(&(path.len() as u32).to_le_bytes());
        v.extend_from_slice(path.as_bytes());
        if kind == b'P' {
            v.extend_from_slice(&(data.len() as u64).to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(data);
        }
        v
    }

    #[test]
    fn reads_a_stage_one_archive_and_recognises_the_end() {
        let mut a = chunk(b'P', "xtrabackup_galera_info", b"6d5f:1234 0\n");
        a.extend(chunk(b'E', "xtrabackup_galera_info", b""));
        a.extend(chunk(b'P', "donor_galera_info", b"x"));
        assert_eq!(
            file_content(&a, "xtrabackup_galera_info").unwrap(),
            b"6d5f:1234 0\n"
        );
        assert_eq!(
            galera_position("6d5f:1234 0\n"),
            Some(("6d5f".into(), 1234))
        );
        let mut full = a.clone();
        full.extend(chunk(b'E', "xtrabackup_info", b""));
        assert!(ends_complete(&full));
        assert!(!ends_complete(&a));
        assert!(!ends_complete(&full[..full.len() - 1]));
    }
}
