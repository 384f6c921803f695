//! CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), slice-by-8, tables built at
//! compile time. Written here so the kernel needs no extra dependency; snapshots of a
//! hundred thousand members are some megabytes, so the byte-at-a-time loop would cost
//! more than the serialisation itself.

const POLY: u32 = 0xEDB8_8320;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let previous = tables[t - 1][i];
            tables[t][i] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// An incremental CRC-32.
pub(crate) struct Crc32 {
    /// The running register, inverted as the algorithm wants it.
    state: u32,
}

impl Crc32 {
    pub(crate) fn new() -> Self {
        Crc32 { state: !0 }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let t = &TABLES;
        let mut crc = self.state;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let low = crc ^ u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let high = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            crc = t[7][(low & 0xFF) as usize]
                ^ t[6][((low >> 8) & 0xFF) as usize]
                ^ t[5][((low >> 16) & 0xFF) as usize]
                ^ t[4][(low >> 24) as usize]
                ^ t[3][(high & 0xFF) as usize]
                ^ t[2][((high >> 8) & 0xFF) as usize]
                ^ t[1][((high >> 16) & 0xFF) as usize]
                ^ t[0][(high >> 24) as usize];
        }
        for &byte in chunks.remainder() {
            crc = (crc >> 8) ^ t[0][((crc ^ byte as u32) & 0xFF) as usize];
        }
        self.state = crc;
    }

    pub(crate) fn finish(&self) -> u32 {
        !self.state
    }
}

/// The CRC-32 of `bytes`.
#[cfg(test)]
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes);
    crc.finish()
}

#[cfg(test)]
mod tests {
    use super::crc32;
    use proptest::prelude::*;

    fn bytewise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ super::POLY } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn known_values() {
        assert_eq!(crc32(b""), 0);
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    proptest! {
        #[test]
        fn slice_by_8_equals_bitwise(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(crc32(&bytes), bytewise(&bytes));
        }

        #[test]
        fn split_updates_equal_one_update(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
            split in 0usize..100,
        ) {
            let split = split.min(bytes.len());
            let mut crc = super::Crc32::new();
            crc.update(&bytes[..split]);
            crc.update(&bytes[split..]);
            prop_assert_eq!(crc.finish(), crc32(&bytes));
        }
    }
}
