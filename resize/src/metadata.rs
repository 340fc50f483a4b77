//! What `strip=false` keeps of a source's metadata: the rights notice (EXIF `Artist` and
//! `Copyright`) and the RGB ICC profile, and nothing else.
//!
//! By default every output is bare pixels ([`crate::encode`] writes no metadata): EXIF
//! carries camera serial numbers, GPS positions and thumbnails that a resized copy should
//! not leak, and the pixels are converted to sRGB so no profile is needed. A publisher
//! that must keep a copyright notice asks for `strip=false`; then this module rebuilds a
//! minimal EXIF block holding only the two rights tags (never the source's block as is:
//! its orientation would be applied twice, its GPS would leak), and the profile is
//! embedded with the pixels left in its colour space (as imgproxy does with
//! `strip_color_profile:0`), which is exact and spares the conversion.
//!
//! Why not a crate: `kamadak-exif` reads but does not write, `little_exif` writes whole
//! files; both parse every IFD, while two ASCII tags of IFD0 are a bounded walk of one
//! table. The input was already held to `limits.metadata_bytes_max` by the decoder.

/// TIFF tag of `Artist` (ASCII).
const TAG_ARTIST: u16 = 0x013B;
/// TIFF tag of `Copyright` (ASCII).
const TAG_COPYRIGHT: u16 = 0x8298;
/// TIFF field type ASCII.
const TYPE_ASCII: u16 = 2;
/// Most IFD0 entries read: real cameras write a few dozen; a longer table is not walked
/// past this (the rights tags come early, tags being sorted).
const IFD_ENTRIES_MAX: usize = 1024;

/// The metadata an output keeps when `strip=false` is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Kept {
    /// The source's RGB ICC profile; the pixels are left in its colour space.
    pub icc: Option<Vec<u8>>,
    /// A TIFF-format EXIF block (no `Exif\0\0` prefix) holding only `Artist` and
    /// `Copyright`.
    pub exif: Option<Vec<u8>>,
}

/// The rights tags of a TIFF-format EXIF block (an `Exif\0\0` prefix is skipped, as some
/// WebP and PNG writers add it), rebuilt as a little-endian TIFF block holding only them;
/// `None` when the block has neither or is malformed.
pub(crate) fn rights_exif(block: &[u8]) -> Option<Vec<u8>> {
    let tiff = block.strip_prefix(b"Exif\0\0").unwrap_or(block);
    let big = match tiff.get(..4)? {
        b"II*\0" => false,
        b"MM\0*" => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at.checked_add(2)?)?;
        Some(if big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = tiff.get(at..at.checked_add(4)?)?;
        Some(if big {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    };
    let ifd = u32_at(4)? as usize;
    let count = usize::from(u16_at(ifd)?).min(IFD_ENTRIES_MAX);
    let mut found: Vec<(u16, &[u8])> = Vec::new();
    for i in 0..count {
        let entry = ifd + 2 + 12 * i;
        let tag = u16_at(entry)?;
        if tag != TAG_ARTIST && tag != TAG_COPYRIGHT {
            continue;
        }
        if u16_at(entry + 2)? != TYPE_ASCII {
            continue;
        }
        let len = u32_at(entry + 4)? as usize;
        let value = if len <= 4 {
            tiff.get(entry + 8..entry + 8 + len)?
        } else {
            let at = u32_at(entry + 8)? as usize;
            tiff.get(at..at.checked_add(len)?)?
        };
        // The text up to its NUL; an empty notice is no notice.
        let text = value.split(|&b| b == 0).next().unwrap_or_default();
        if !text.is_empty() && !found.iter().any(|(t, _)| *t == tag) {
            found.push((tag, text));
        }
    }
    if found.is_empty() {
        return None;
    }
    found.sort_by_key(|(tag, _)| *tag);
    Some(tiff_with_ascii(&found))
}

/// A little-endian TIFF block whose IFD0 holds `entries` (sorted by tag) as ASCII fields.
pub(crate) fn tiff_with_ascii(entries: &[(u16, &[u8])]) -> Vec<u8> {
    let ifd_len = 2 + 12 * entries.len() + 4;
    let mut out =
        Vec::with_capacity(8 + ifd_len + entries.iter().map(|e| e.1.len() + 2).sum::<usize>());
    out.extend_from_slice(b"II*\0");
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    let mut data_at = 8 + ifd_len;
    let mut data = Vec::new();
    for (tag, text) in entries {
        let len = text.len() + 1; // with its NUL
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&TYPE_ASCII.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        if len <= 4 {
            let mut inline = [0u8; 4];
            inline[..text.len()].copy_from_slice(text);
            out.extend_from_slice(&inline);
        } else {
            out.extend_from_slice(&(data_at as u32).to_le_bytes());
            data.extend_from_slice(text);
            data.push(0);
            if len % 2 == 1 {
                // Values start on a word boundary.
                data.push(0);
            }
            data_at = 8 + ifd_len + data.len();
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // no IFD1
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A big-endian block with Make, Artist, GPS pointer, Copyright and Orientation.
    fn camera_block() -> Vec<u8> {
        let artist = b"Ana Lopez\0";
        let copyright = b"(c) 2026 Ana Lopez, all rights reserved\0";
        let mut t = b"MM\0*".to_vec();
        t.extend_from_slice(&8u32.to_be_bytes());
        let entries = 5u16;
        let data_start = 8 + 2 + 12 * usize::from(entries) + 4;
        t.extend_from_slice(&entries.to_be_bytes());
        let mut data = Vec::new();
        let mut entry = |t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: &[u8]| {
            t.extend_from_slice(&tag.to_be_bytes());
            t.extend_from_slice(&kind.to_be_bytes());
            t.extend_from_slice(&count.to_be_bytes());
            if value.len() <= 4 {
                let mut v = [0u8; 4];
                v[..value.len()].copy_from_slice(value);
                t.extend_from_slice(&v);
            } else {
                t.extend_from_slice(&((data_start + data.len()) as u32).to_be_bytes());
                data.extend_from_slice(value);
            }
        };
        entry(&mut t, 0x010F, 2, 4, b"Cam\0");
        entry(&mut t, 0x0112, 3, 1, &6u16.to_be_bytes());
        entry(&mut t, TAG_ARTIST, 2, artist.len() as u32, artist);
        entry(&mut t, 0x8298, 2, copyright.len() as u32, copyright);
        entry(&mut t, 0x8825, 4, 1, &0u32.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.extend_from_slice(&data);
        t
    }

    #[test]
    fn keeps_artist_and_copyright_and_nothing_else() {
        let kept = rights_exif(&camera_block()).expect("the rights tags are found");
        let again = rights_exif(&kept).expect("the rebuilt block reads back");
        assert_eq!(kept, again, "rebuilding is a fixed point");
        let text = String::from_utf8_lossy(&kept);
        assert!(text.contains("Ana Lopez"));
        assert!(text.contains("all rights reserved"));
        assert!(!text.contains("Cam"), "Make is dropped");
        // Exactly two entries in IFD0.
        assert_eq!(u16::from_le_bytes([kept[8], kept[9]]), 2);
    }

    #[test]
    fn the_exif_prefix_is_skipped_and_blocks_without_rights_give_none() {
        let mut prefixed = b"Exif\0\0".to_vec();
        prefixed.extend_from_slice(&camera_block());
        assert!(rights_exif(&prefixed).is_some());
        let none = tiff_with_ascii(&[(0x010F, b"Cam")]);
        assert_eq!(rights_exif(&none), None);
    }

    #[test]
    fn malformed_blocks_are_none_not_a_panic() {
        let block = camera_block();
        for cut in 0..block.len() {
            let _ = rights_exif(&block[..cut]);
        }
        let mut lying = block.clone();
        // Entry count of 65535 over a short table.
        lying[8] = 0xFF;
        lying[9] = 0xFF;
        let _ = rights_exif(&lying);
        assert_eq!(rights_exif(b"II*\0\xff\xff\xff\xff"), None);
        assert_eq!(rights_exif(b"nonsense"), None);
    }
}
