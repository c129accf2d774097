//! restic's authenticated encryption (AES-256-CTR with Poly1305-AES) under the repository's
//! master key, for the few files coffer writes itself: locks, and trees that carry file sizes.

use aes256ctr_poly1305aes::{aead::AeadInPlace, Aes256CtrPoly1305Aes};
use rand::RngCore;
use rustic_core::repofile::MasterKey;

#[derive(Clone)]
pub struct RepoCipher {
    key: [u8; 64],
}

impl RepoCipher {
    pub fn new(master: &MasterKey) -> Self {
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&master.encrypt);
        key[32..48].copy_from_slice(&master.mac.k);
        key[48..].copy_from_slice(&master.mac.r);
        Self { key }
    }

    fn cipher(&self) -> Aes256CtrPoly1305Aes {
        Aes256CtrPoly1305Aes::new((&self.key).into())
    }

    /// `nonce ‖ ciphertext ‖ MAC`, the layout of every encrypted blob and file in restic.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(plain.len() + 32);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .cipher()
            .encrypt_in_place_detached((&nonce).into(), &[], &mut out[16..])
            .expect("AES-CTR encryption cannot fail");
        out.extend_from_slice(&tag);
        out
    }

    /// The plaintext of one encrypted blob or file; `None` if the MAC does not match.
    pub fn open(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() < 32 {
            return None;
        }
        let (nonce, rest) = data.split_at(16);
        let (body, tag) = rest.split_at(rest.len() - 16);
        let mut plain = body.to_vec();
        self.cipher()
            .decrypt_in_place_detached(nonce.into(), &[], &mut plain, tag.into())
            .ok()?;
        Some(plain)
    }

    /// An unpacked file (lock, index, snapshot): repository format v2 may compress these, and
    /// a leading 2 then says zstd follows.
    pub fn open_file(&self, data: &[u8]) -> Option<Vec<u8>> {
        let plain = self.open(data)?;
        if plain.first() == Some(&2) {
            return zstd::decode_all(&plain[1..]).ok();
        }
        Some(plain)
    }

    /// The counterpart of [`open_file`](Self::open_file): compressed when the repository's
    /// format allows it (v2), plain JSON otherwise.
    pub fn seal_file(&self, json: &[u8], compress: bool) -> Vec<u8> {
        if !compress {
            return self.encrypt(json);
        }
        let mut plain = vec![2u8];
        plain.extend(zstd::encode_all(json, 0).expect("zstd into memory cannot fail"));
        self.encrypt(&plain)
    }
}
