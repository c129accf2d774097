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
        let name = archive.get(i + 14..(i + 14).checked_add(plen)?)?;
        i += 14 + plen;
        match kind {
            b'E' => {}
            b'P' => {
                // The lengths come from the sender: a huge one must end the walk, not wrap.
                let len = u64::from_le_bytes(archive.get(i..i + 8)?.try_into().ok()?);
                let len = usize::try_from(len).ok()?;
                // payload length, offset, checksum, then the data
                let end = (i + 20).checked_add(len)?;
                let data = archive.get(i + 20..end)?;
                if name == path.as_bytes() {
                    out.get_or_insert_with(Vec::new).extend_from_slice(data);
                }
                i = end;
            }
            _ => return out,
        }
    }
    out
}

/// Why a stream was refused: one of its files would be written outside the directory it is
/// extracted into, or the stream is not one coffer can judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "the stream holds a file named `{path}`, which would be written outside the directory \
         it is extracted into ({why}); the snapshot is not a mariabackup stream coffer restores"
    )]
    Path { path: String, why: &'static str },
    #[error(
        "the stream is not an xbstream archive at byte {offset} ({why}); the snapshot is not a \
         mariabackup stream coffer restores"
    )]
    Format { offset: u64, why: String },
}

/// Longest path coffer accepts in a chunk (mbstream's own limit is 512 bytes).
const MAX_PATH: usize = 4096;
/// magic, flags, type, path length
const FIXED: usize = 8 + 1 + 1 + 4;
/// payload length, offset, checksum
const PAYLOAD_HEAD: usize = 8 + 8 + 4;

/// Judges a path from a chunk: relative, no `..`, `.` or empty components, no NUL.
pub fn check_path(path: &[u8]) -> Result<(), Refused> {
    let refuse = |why| Refused::Path {
        path: String::from_utf8_lossy(path).into_owned(),
        why,
    };
    if path.is_empty() {
        return Err(refuse("the name is empty"));
    }
    if path.contains(&0) {
        return Err(refuse("the name contains a NUL byte"));
    }
    if path.starts_with(b"/") {
        return Err(refuse("the path is absolute"));
    }
    for part in path.split(|b| *b == b'/') {
        match part {
            b".." => return Err(refuse("the path climbs out with `..`")),
            b"." => return Err(refuse("the path has a `.` component")),
            b"" => return Err(refuse("the path has an empty component")),
            _ => {}
        }
    }
    Ok(())
}

enum Stage {
    /// Collecting a chunk's fixed header and path.
    Header,
    /// Collecting a payload chunk's length, offset and checksum.
    PayloadHead,
    /// Passing over this many payload bytes.
    Payload(u64),
}

/// Reads an xbstream as it passes and judges each chunk's path before the byte that completes
/// its header goes on: mbstream acts on a chunk only once its whole header has arrived, so a
/// refused path never reaches the file system. Memory stays bounded (one header).
pub struct PathCheck {
    stage: Stage,
    head: Vec<u8>,
    offset: u64,
    refused: Option<Refused>,
    /// Small files whose content is kept as they pass (see [`PathCheck::capturing`]).
    wanted: &'static [&'static str],
    /// The kept file the payload now passing belongs to.
    current: Option<&'static str>,
    captured: Vec<(&'static str, Vec<u8>)>,
}

impl Default for PathCheck {
    fn default() -> Self {
        PathCheck {
            stage: Stage::Header,
            head: Vec::with_capacity(FIXED + 64),
            offset: 0,
            refused: None,
            wanted: &[],
            current: None,
            captured: Vec::new(),
        }
    }
}

/// The files in which mariabackup records the binlog position its backup is consistent at
/// (`xtrabackup_binlog_info` up to 11.x, then `mariadb_backup_binlog_info`).
pub const BINLOG_INFO: &[&str] = &["xtrabackup_binlog_info", "mariadb_backup_binlog_info"];

/// More than any file coffer keeps from a stream holds; a longer one is not kept whole.
const CAPTURE_MAX: usize = 64 << 10;

impl PathCheck {
    pub fn new() -> PathCheck {
        PathCheck::default()
    }

    /// Also keeps the content of the top-level files named `wanted` as they pass (small ones:
    /// at most 64 KiB each are kept).
    pub fn capturing(wanted: &'static [&'static str]) -> PathCheck {
        PathCheck {
            wanted,
            ..PathCheck::default()
        }
    }

    /// The content kept of `name`, if it passed.
    pub fn captured(&self, name: &str) -> Option<&[u8]> {
        self.captured
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.as_slice())
    }

    /// The first refusal, if any (every later call repeats it).
    pub fn refused(&self) -> Option<&Refused> {
        self.refused.as_ref()
    }

    /// Judges the next bytes of the stream; once a refusal is returned, every later call
    /// returns it too.
    pub fn feed(&mut self, mut buf: &[u8]) -> Result<(), Refused> {
        if let Some(r) = &self.refused {
            return Err(r.clone());
        }
        while !buf.is_empty() {
            let used = match self.step(buf) {
                Ok(n) => n,
                Err(r) => {
                    self.refused = Some(r.clone());
                    return Err(r);
                }
            };
            self.offset += used as u64;
            buf = &buf[used..];
        }
        Ok(())
    }

    /// Consumes what it can of `buf` for the current stage; returns how much.
    fn step(&mut self, buf: &[u8]) -> Result<usize, Refused> {
        match self.stage {
            Stage::Payload(left) => {
                let n = (left.min(buf.len() as u64)) as usize;
                if let Some(name) = self.current {
                    if let Some((_, kept)) = self.captured.iter_mut().find(|(k, _)| *k == name) {
                        let room = CAPTURE_MAX.saturating_sub(kept.len()).min(n);
                        kept.extend_from_slice(&buf[..room]);
                    }
                }
                self.stage = if left == n as u64 {
                    Stage::Header
                } else {
                    Stage::Payload(left - n as u64)
                };
                Ok(n)
            }
            Stage::PayloadHead => {
                let n = (PAYLOAD_HEAD - self.head.len()).min(buf.len());
                self.head.extend_from_slice(&buf[..n]);
                if self.head.len() == PAYLOAD_HEAD {
                    let len = u64::from_le_bytes(self.head[..8].try_into().expect("8 bytes"));
                    self.head.clear();
                    self.stage = if len == 0 {
                        Stage::Header
                    } else {
                        Stage::Payload(len)
                    };
                }
                Ok(n)
            }
            Stage::Header => {
                let start = self.offset - self.head.len() as u64;
                let want = if self.head.len() < FIXED {
                    FIXED
                } else {
                    FIXED + self.path_len()
                };
                let n = (want - self.head.len()).min(buf.len());
                self.head.extend_from_slice(&buf[..n]);
                if self.head.len() == FIXED {
                    if &self.head[..8] != b"XBSTCK01" {
                        return Err(Refused::Format {
                            offset: start,
                            why: "no chunk magic XBSTCK01".into(),
                        });
                    }
                    if !matches!(self.head[9], b'P' | b'E') {
                        return Err(Refused::Format {
                            offset: start,
                            why: format!(
                                "chunk type {:?} is not one mbstream extracts",
                                self.head[9] as char
                            ),
                        });
                    }
                    if self.path_len() > MAX_PATH {
                        return Err(Refused::Format {
                            offset: start,
                            why: format!("a path of {} bytes", self.path_len()),
                        });
                    }
                }
                if self.head.len() >= FIXED && self.head.len() == FIXED + self.path_len() {
                    check_path(&self.head[FIXED..])?;
                    let payload = self.head[9] == b'P';
                    self.current = None;
                    if payload {
                        let wanted: &'static [&'static str] = self.wanted;
                        let path = &self.head[FIXED..];
                        if let Some(&name) = wanted.iter().find(|w| w.as_bytes() == path) {
                            self.current = Some(name);
                            if !self.captured.iter().any(|(k, _)| *k == name) {
                                self.captured.push((name, Vec::new()));
                            }
                        }
                    }
                    self.head.clear();
                    if payload {
                        self.stage = Stage::PayloadHead;
                    }
                }
                Ok(n)
            }
        }
    }

    fn path_len(&self) -> usize {
        u32::from_le_bytes(self.head[10..14].try_into().expect("4 bytes")) as usize
    }
}

/// The binlog file, position and GTID state (empty when the server has no GTIDs) of a
/// [`BINLOG_INFO`] file: `bin.000001<TAB>774<TAB>0-1-5`.
pub fn binlog_info(text: &str) -> Option<(String, u64, String)> {
    let mut it = text.trim_end_matches(['\n', '\r']).split('\t');
    let file = it.next().filter(|f| !f.is_empty())?.to_string();
    let pos = it.next()?.trim().parse().ok()?;
    let gtid = it.next().unwrap_or("").trim().to_string();
    Some((file, pos, gtid))
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

    fn feed_in_pieces(stream: &[u8], piece: usize) -> Result<(), Refused> {
        let mut c = PathCheck::new();
        for p in stream.chunks(piece) {
            c.feed(p)?;
        }
        Ok(())
    }

    fn file(path: &str, data: &[u8]) -> Vec<u8> {
        let mut v = chunk(b'P', path, data);
        v.extend(chunk(b'E', path, b""));
        v
    }

    #[test]
    fn a_stream_of_relative_paths_passes_in_pieces_of_any_size() {
        let mut s = file("ibdata1", &[7u8; 1000]);
        s.extend(file("mysql/db.opt", b"x"));
        s.extend(file("empty", b""));
        s.extend(file("xtrabackup_info", b"tool_name = mariabackup\n"));
        for piece in [1, 2, 13, 14, 15, 100, 4096] {
            assert_eq!(feed_in_pieces(&s, piece), Ok(()), "pieces of {piece}");
        }
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused_before_their_header_passes() {
        for (bad, why) in [
            ("../escape", "`..`"),
            ("sub/../../escape", "`..`"),
            ("..", "`..`"),
            ("/tmp/abs", "absolute"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("./a", "`.` component"),
            ("a\0b", "NUL"),
            ("", "empty"),
        ] {
            let mut s = file("ibdata1", b"ok");
            let good = s.len();
            s.extend(file(bad, b"pwned"));
            let mut c = PathCheck::new();
            assert_eq!(c.feed(&s[..good]), Ok(()));
            // The header without its last byte is not judged yet, nor harmful: mbstream waits.
            let header_end = good + FIXED + bad.len();
            assert_eq!(c.feed(&s[good..header_end - 1]), Ok(()), "{bad:?}");
            let e = c.feed(&s[header_end - 1..header_end]).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert!(c.feed(b"more").is_err(), "a refusal sticks");
        }
    }

    #[test]
    fn the_binlog_position_is_kept_as_the_stream_passes_in_pieces_of_any_size() {
        let info = b"bin.000001\t1117\t0-1-5,100-21-7\n";
        let mut s = file("ibdata1", &[7u8; 5000]);
        // A file of that name in a database directory is not the backup's own.
        s.extend(file("db/xtrabackup_binlog_info", b"fake\t1\t9-9-9\n"));
        // mariabackup writes the file in one payload chunk; two must also be joined.
        s.extend(chunk(b'P', "xtrabackup_binlog_info", &info[..10]));
        s.extend(chunk(b'P', "xtrabackup_binlog_info", &info[10..]));
        s.extend(chunk(b'E', "xtrabackup_binlog_info", b""));
        s.extend(file("xtrabackup_info", b"tool_name = mariabackup\n"));
        for piece in [1, 3, 14, 15, 100, 4096, s.len()] {
            let mut c = PathCheck::capturing(BINLOG_INFO);
            for p in s.chunks(piece) {
                c.feed(p).unwrap();
            }
            assert_eq!(
                c.captured("xtrabackup_binlog_info"),
                Some(&info[..]),
                "{piece}"
            );
            assert_eq!(c.captured("mariadb_backup_binlog_info"), None);
        }
        assert_eq!(
            binlog_info("bin.000001\t1117\t0-1-5,100-21-7\n"),
            Some(("bin.000001".into(), 1117, "0-1-5,100-21-7".into()))
        );
        assert_eq!(
            binlog_info("bin.000001\t4\t\n"),
            Some(("bin.000001".into(), 4, String::new()))
        );
        assert_eq!(
            binlog_info("bin.000001\t4\n"),
            Some(("bin.000001".into(), 4, String::new()))
        );
        assert_eq!(binlog_info(""), None);
        assert_eq!(binlog_info("bin\tx\t0-1-1"), None);
    }

    #[test]
    fn garbage_and_unknown_chunks_are_refused() {
        assert!(matches!(
            feed_in_pieces(b"NOTXBSTREAM-AT-ALL", 5),
            Err(Refused::Format { offset: 0, .. })
        ));
        let mut s = file("a", b"1");
        let at = s.len() as u64;
        s.extend(chunk(b'S', "b", b""));
        assert!(matches!(
            feed_in_pieces(&s, 3),
            Err(Refused::Format { offset, .. }) if offset == at
        ));
        let mut long = b"XBSTCK01\0P".to_vec();
        long.extend_from_slice(&100_000u32.to_le_bytes());
        assert!(feed_in_pieces(&long, 7).is_err());
    }

    #[test]
    fn a_stage_one_archive_with_absurd_lengths_reads_as_nothing() {
        let mut a = b"XBSTCK01\0P".to_vec();
        a.extend_from_slice(&22u32.to_le_bytes());
        a.extend_from_slice(b"xtrabackup_galera_info");
        a.extend_from_slice(&u64::MAX.to_le_bytes());
        a.extend_from_slice(&[0u8; 12]);
        a.extend_from_slice(b"6d5f:1 0\n");
        assert_eq!(file_content(&a, "xtrabackup_galera_info"), None);
        let mut b = b"XBSTCK01\0P".to_vec();
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(file_content(&b, "x"), None);
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
