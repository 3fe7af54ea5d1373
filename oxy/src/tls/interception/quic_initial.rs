//! Sniffing a UDP flow's first datagram for a QUIC v1/v2 client Initial and its ClientHello's SNI and ALPN.
//!
//! The Initial is opened with the version's initial keys (RFC 9001 §5.2, RFC 9369 §3.3.1).
//! Everything here reads untrusted bytes: every read is bounds-checked, nothing panics, and
//! hostile input ends in [`Sniffed::NotQuic`] or a [`HelloError`].

use super::client_hello::{ClientHello, HelloError, parse_client_hello};
use rustls::Side;
use rustls::quic::{DirectionalKeys, Version};
use std::ops::Range;

/// QUIC version 1 (RFC 9000).
const QUIC_V1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
const QUIC_V2: u32 = 0x6b33_43cf;
/// The longest connection ID QUIC v1 and v2 allow (RFC 9000 §17.2).
const MAX_CID_LEN: usize = 20;
/// The largest CRYPTO stream offset QUIC allows (RFC 9000 §19.6: 2^62 - 1).
const MAX_STREAM_OFFSET: u64 = (1 << 62) - 1;

/// What the first datagram(s) of a UDP flow turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A QUIC v1 or v2 client Initial carrying a whole ClientHello.
    Quic(ClientHello),
    /// A QUIC v1 or v2 client Initial that opens with the initial keys, but whose ClientHello
    /// continues in later datagrams (or whose CRYPTO data does not start at offset 0 here).
    QuicIncomplete,
    /// Not a client Initial of a QUIC version read here: not QUIC at all, a short-header or
    /// other packet, an unknown version, an Initial that does not open, or an Initial whose
    /// frames or ClientHello are malformed (including CRYPTO frames that disagree about the
    /// same bytes).
    NotQuic,
}

/// Sniffs the first datagram of a UDP flow for a QUIC v1/v2 client Initial and reads its
/// ClientHello.
pub fn sniff_initial(datagram: &[u8]) -> Sniffed {
    sniff_initials([datagram])
}

/// Like [`sniff_initial`], for a ClientHello spread over the first few datagrams of one flow
/// (large ClientHellos, such as ones with post-quantum key shares, take two or more).
///
/// The first datagram must start with a client Initial; its Destination Connection ID gives
/// the keys for all of them (RFC 9001 §5.2). Packets in later datagrams that do not open with
/// those keys are skipped. The caller bounds how many datagrams it buffers.
pub fn sniff_initials<'a>(datagrams: impl IntoIterator<Item = &'a [u8]>) -> Sniffed {
    let mut datagrams = datagrams.into_iter();
    let Some(first) = datagrams.next() else {
        return Sniffed::NotQuic;
    };
    let Some(header) = parse_long_header(first) else {
        return Sniffed::NotQuic;
    };
    if !header.initial {
        return Sniffed::NotQuic;
    }
    let Some(dcid) = first.get(header.dcid.clone()) else {
        return Sniffed::NotQuic;
    };
    let Some(mut flow) = Flow::new(header.version, dcid) else {
        return Sniffed::NotQuic;
    };
    match flow.read_datagram(first, true) {
        Some(Walk::Closed) => return flow.finish(),
        Some(Walk::Continue) => {}
        None => return Sniffed::NotQuic,
    }
    for datagram in datagrams {
        match flow.read_datagram(datagram, false) {
            Some(Walk::Closed) => break,
            Some(Walk::Continue) => {}
            None => return Sniffed::NotQuic,
        }
    }
    flow.finish()
}

/// Whether to keep reading after a datagram.
enum Walk {
    /// Read on.
    Continue,
    /// A CONNECTION_CLOSE ended the connection: read no further.
    Closed,
}

/// CRYPTO frame data at its stream offset.
struct Fragment {
    offset: u64,
    data: Vec<u8>,
}

/// The state of one flow's sniffing: the client's initial keys and the CRYPTO data so far.
struct Flow {
    version: u32,
    /// The keys the client protects its Initial packets with.
    client: DirectionalKeys,
    fragments: Vec<Fragment>,
}

impl Flow {
    /// The client's initial keys for `version` and the client-chosen Destination Connection ID.
    fn new(version: u32, dcid: &[u8]) -> Option<Self> {
        let rustls_version = match version {
            QUIC_V1 => Version::V1,
            QUIC_V2 => Version::V2,
            _ => return None,
        };
        // Initial packets always use TLS_AES_128_GCM_SHA256 (RFC 9001 §5.2).
        let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()?
            .quic_suite()?;
        // As the server: `remote` holds the keys of the client's packets.
        let keys = suite.keys(dcid, Side::Server, rustls_version);
        Some(Self {
            version,
            client: keys.remote,
            fragments: Vec::new(),
        })
    }

    /// Reads the client Initial packets of one datagram, walking coalesced packets by their
    /// Length fields. `None` when the flow's first datagram does not start with an Initial
    /// that opens, or when an Initial that opened holds malformed frames.
    fn read_datagram(&mut self, datagram: &[u8], first_of_flow: bool) -> Option<Walk> {
        let mut buf = datagram.to_vec();
        let mut start = 0usize;
        // RFC 9000 §12.2: packets after the first with another Destination Connection ID
        // are ignored.
        let mut datagram_dcid: Option<Vec<u8>> = None;
        while start < buf.len() {
            let first_packet = start == 0;
            let strict = first_of_flow && first_packet;
            let parsed = buf.get(start..).and_then(parse_long_header);
            let Some(header) = parsed.filter(|h| h.version == self.version) else {
                // A short header runs to the end of the datagram; anything else cannot be
                // walked past. Either way this datagram holds nothing more to read.
                if strict {
                    return None;
                }
                break;
            };
            let packet_end = start.checked_add(header.packet_len)?;
            let dcid = buf.get(start..)?.get(header.dcid.clone())?.to_vec();
            let same_dcid = match &datagram_dcid {
                Some(expected) => *expected == dcid,
                None => {
                    datagram_dcid = Some(dcid);
                    true
                }
            };
            if header.initial && same_dcid {
                let packet = buf.get_mut(start..packet_end)?;
                match open_packet(&self.client, packet, header.pn_offset) {
                    Some(plain) => {
                        let payload = packet.get(plain)?;
                        if read_frames(payload, &mut self.fragments)? {
                            return Some(Walk::Closed);
                        }
                    }
                    None if strict => return None,
                    None => {}
                }
            } else if strict {
                return None;
            }
            start = packet_end;
        }
        Some(Walk::Continue)
    }

    /// The verdict on the CRYPTO data read so far.
    fn finish(mut self) -> Sniffed {
        let Some(stream) = contiguous_prefix(&mut self.fragments) else {
            return Sniffed::NotQuic;
        };
        match parse_client_hello(&stream) {
            Ok(hello) => Sniffed::Quic(hello),
            Err(HelloError::Incomplete) => Sniffed::QuicIncomplete,
            Err(HelloError::Malformed(_)) => Sniffed::NotQuic,
        }
    }
}

/// The parts of a long-header packet's header the walk needs.
struct LongHeader {
    version: u32,
    /// Whether this is an Initial packet (type bits 0b00 in v1, 0b01 in v2).
    initial: bool,
    /// Where the Destination Connection ID lies, from the packet's start.
    dcid: Range<usize>,
    /// Where the (protected) Packet Number starts, from the packet's start.
    pn_offset: usize,
    /// The whole packet's length: header, packet number and protected payload.
    packet_len: usize,
}

/// Reads a v1/v2 long header with a Length field (Initial, 0-RTT, Handshake) at the start of
/// `packet`. `None` for short headers, Version Negotiation, Retry, other versions, and
/// headers that are malformed or run past the datagram.
fn parse_long_header(packet: &[u8]) -> Option<LongHeader> {
    let mut r = Reader::new(packet);
    let first = r.u8()?;
    if first & 0x80 == 0 {
        return None;
    }
    let version = u32::from_be_bytes(r.array::<4>()?);
    let packet_type = (first >> 4) & 0x03;
    let initial = match (version, packet_type) {
        (QUIC_V1, 0b00) | (QUIC_V2, 0b01) => true,
        // Retry has no Length field and never comes from a client.
        (QUIC_V1, 0b11) | (QUIC_V2, 0b00) => return None,
        (QUIC_V1 | QUIC_V2, _) => false,
        _ => return None,
    };
    let dcid_len = usize::from(r.u8()?);
    if dcid_len > MAX_CID_LEN {
        return None;
    }
    let dcid_start = r.pos();
    r.bytes(dcid_len)?;
    let scid_len = usize::from(r.u8()?);
    if scid_len > MAX_CID_LEN {
        return None;
    }
    r.bytes(scid_len)?;
    let token_len = if initial {
        usize::try_from(r.varint()?).ok()?
    } else {
        0
    };
    r.bytes(token_len)?;
    // The fixed bit is set, except that a client may clear it in an Initial that carries a
    // server's token (RFC 9287 §3.1). Packets that are only skipped are not checked.
    if initial && first & 0x40 == 0 && token_len == 0 {
        return None;
    }
    let length = usize::try_from(r.varint()?).ok()?;
    let pn_offset = r.pos();
    let packet_len = pn_offset.checked_add(length)?;
    if packet_len > packet.len() {
        return None;
    }
    Some(LongHeader {
        version,
        initial,
        dcid: dcid_start..dcid_start.checked_add(dcid_len)?,
        pn_offset,
        packet_len,
    })
}

/// Removes header protection and decrypts one Initial packet in place (`packet` is exactly
/// the packet). Returns where the plaintext payload lies in `packet`, or `None` when the
/// packet is too short or does not open.
fn open_packet(
    keys: &DirectionalKeys,
    packet: &mut [u8],
    pn_offset: usize,
) -> Option<Range<usize>> {
    // The header-protection sample starts 4 bytes past the Packet Number's start
    // (RFC 9001 §5.4.2), whatever the Packet Number's length.
    let sample_start = pn_offset.checked_add(4)?;
    let sample_end = sample_start.checked_add(keys.header.sample_len())?;
    let sample = packet.get(sample_start..sample_end)?.to_vec();
    let (first, rest) = packet.split_first_mut()?;
    // Offer the longest Packet Number (4 bytes); the key unmasks only as many bytes as the
    // unmasked first byte says.
    let pn_in_rest = pn_offset.checked_sub(1)?..pn_offset.checked_add(3)?;
    let pn_bytes = rest.get_mut(pn_in_rest)?;
    keys.header
        .decrypt_in_place(&sample, first, pn_bytes)
        .ok()?;
    let first = *first;
    let pn_len = usize::from(first & 0x03) + 1;
    let header_len = pn_offset.checked_add(pn_len)?;
    // The first packet of a flow has no earlier packet number to expand against, so the
    // truncated number is the full one (RFC 9000 §A.3 with an expected number of 0).
    let packet_number = packet
        .get(pn_offset..header_len)?
        .iter()
        .fold(0u64, |pn, &b| (pn << 8) | u64::from(b));
    let (header, payload) = packet.split_at_mut_checked(header_len)?;
    let plain_len = keys
        .packet
        .decrypt_in_place(packet_number, header, payload)
        .ok()?
        .len();
    // The reserved bits are zero once both protections are off (RFC 9000 §17.2).
    if first & 0x0c != 0 {
        return None;
    }
    Some(header_len..header_len.checked_add(plain_len)?)
}

/// Reads the frames of an Initial packet's plaintext, keeping CRYPTO data. `Some(true)` when
/// a CONNECTION_CLOSE ends the connection; `None` for a frame that is malformed or not
/// allowed in an Initial packet (RFC 9000 §17.2.2).
fn read_frames(payload: &[u8], fragments: &mut Vec<Fragment>) -> Option<bool> {
    let mut r = Reader::new(payload);
    // Frame types are varints in their shortest form (RFC 9000 §12.4): every type allowed
    // in an Initial packet is a single byte below 0x40.
    while let Some(frame_type) = r.u8() {
        match frame_type {
            // PADDING, PING
            0x00 | 0x01 => {}
            // ACK, ACK with ECN counts
            0x02 | 0x03 => skip_ack(&mut r, frame_type == 0x03)?,
            // CRYPTO
            0x06 => {
                let offset = r.varint()?;
                let len = r.varint()?;
                if offset.checked_add(len)? > MAX_STREAM_OFFSET {
                    return None;
                }
                let data = r.bytes(usize::try_from(len).ok()?)?;
                if !data.is_empty() {
                    fragments.push(Fragment {
                        offset,
                        data: data.to_vec(),
                    });
                }
            }
            // CONNECTION_CLOSE (transport; the application variant is not allowed here, but
            // ends the connection all the same)
            0x1c | 0x1d => return Some(true),
            _ => return None,
        }
    }
    Some(false)
}

/// Skips the rest of an ACK frame after its type (RFC 9000 §19.3).
fn skip_ack(r: &mut Reader<'_>, ecn: bool) -> Option<()> {
    r.varint()?; // Largest Acknowledged
    r.varint()?; // ACK Delay
    let ranges = r.varint()?; // ACK Range Count
    r.varint()?; // First ACK Range
    // Each range takes at least two bytes, so a hostile count runs out of input quickly.
    for _ in 0..ranges {
        r.varint()?; // Gap
        r.varint()?; // ACK Range Length
    }
    if ecn {
        r.varint()?; // ECT0 Count
        r.varint()?; // ECT1 Count
        r.varint()?; // ECN-CE Count
    }
    Some(())
}

/// The CRYPTO stream from offset 0 up to its first gap, whatever order the frames came in.
/// `None` when two frames carry different bytes for the same offset: the sniffer and the
/// server could then read different ClientHellos.
fn contiguous_prefix(fragments: &mut [Fragment]) -> Option<Vec<u8>> {
    fragments.sort_by_key(|f| f.offset);
    let mut stream: Vec<u8> = Vec::new();
    for fragment in fragments.iter() {
        let have = u64::try_from(stream.len()).ok()?;
        if fragment.offset > have {
            break;
        }
        let start = usize::try_from(fragment.offset).ok()?;
        let overlap = stream.len().checked_sub(start)?;
        let (seen, new) = fragment
            .data
            .split_at_checked(overlap.min(fragment.data.len()))?;
        let already = stream.get(start..start.checked_add(seen.len())?)?;
        if already != seen {
            return None;
        }
        stream.extend_from_slice(new);
    }
    Some(stream)
}

/// A cursor over untrusted bytes: every read is checked and returns `None` past the end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn pos(&self) -> usize {
        self.pos
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        let [b] = self.array::<1>()?;
        Some(b)
    }

    /// A QUIC variable-length integer (RFC 9000 §16).
    fn varint(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let extra = (1usize << (first >> 6)) - 1;
        let rest = self.bytes(extra)?;
        Some(
            rest.iter()
                .fold(u64::from(first & 0x3f), |v, &b| (v << 8) | u64::from(b)),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    const DCID: &str = "8394c8f03e515708";

    /// RFC 9001 Appendix A.2: the protected client Initial (1200 bytes; DCID
    /// 0x8394c8f03e515708, packet number 2).
    const RFC9001_CLIENT_INITIAL: &str = "
        c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11
        d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399
        1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c
        8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212
        30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5
        457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208
        4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec
        4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3
        485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db
        059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c
        7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8
        9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556
        be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74
        68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a
        c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00
        f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632
        291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964
        25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd
        14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff
        ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198
        e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd
        c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73
        203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f
        cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e
        fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade
        a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047
        90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2
        162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4
        40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0
        6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e
        8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0
        be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400
        54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab
        760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9
        f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4
        056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064
        7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241
        e221af44860018ab0856972e194cd934";

    /// RFC 9369 Appendix A.2: the same client Initial protected as QUIC v2.
    const RFC9369_CLIENT_INITIAL: &str = "
        d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485
        dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04
        9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d
        250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a
        12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500
        cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68
        18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33
        12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3
        d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd
        6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520
        bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045
        636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f
        ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12
        16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5
        4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4
        fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b
        8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7
        14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9
        9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91
        abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd
        80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db
        848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18
        d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15
        c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc
        7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61
        f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710
        10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b
        3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e
        06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce
        8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1
        34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1
        e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd
        5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3
        8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89
        d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53
        6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19
        9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b
        a18b2faa745b6fe189cf772a9f84cbfc";

    /// The unprotected payload of both vectors starts with this CRYPTO frame (offset 0,
    /// length 241: the ClientHello, SNI "example.com", ALPN "alpn"); PADDING fills the
    /// remaining 917 bytes of the 1162-byte payload.
    const RFC_CRYPTO_FRAME: &str = "
        060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868
        04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578
        616d706c652e636f6dff01000100000a00080006001d00170018001000070005
        04616c706e000500050100000000003300260024001d00209370b2c9caa47fba
        baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400
        0d0010000e0403050306030203080408050806002d00020101001c0002400100
        3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000
        75300901100f088394c8f03e51570806048000ffff";

    fn rfc_payload() -> Vec<u8> {
        let mut payload = hex(RFC_CRYPTO_FRAME);
        payload.resize(1162, 0);
        payload
    }

    fn rfc_client_hello() -> Vec<u8> {
        // The CRYPTO frame's data: after type (1 byte), offset (1) and length (2).
        hex(RFC_CRYPTO_FRAME)[4..].to_vec()
    }

    fn example_com() -> ClientHello {
        ClientHello {
            sni: Some("example.com".into()),
            alpn: vec!["alpn".into()],
        }
    }

    fn varint(v: u64) -> Vec<u8> {
        match v {
            0..=0x3f => vec![v as u8],
            0x40..=0x3fff => (0x4000 | v as u16).to_be_bytes().to_vec(),
            0x4000..=0x3fff_ffff => (0x8000_0000 | v as u32).to_be_bytes().to_vec(),
            _ => (0xc000_0000_0000_0000 | v).to_be_bytes().to_vec(),
        }
    }

    /// A CRYPTO frame.
    fn crypto(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x06];
        frame.extend(varint(offset));
        frame.extend(varint(data.len() as u64));
        frame.extend_from_slice(data);
        frame
    }

    /// A client Initial protected with the client's keys for `key_dcid`, carrying
    /// `header_dcid`, a 4-byte packet number and `payload`.
    fn seal_with(
        version: u32,
        key_dcid: &[u8],
        header_dcid: &[u8],
        pn: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let (rustls_version, type_bits) = match version {
            QUIC_V1 => (Version::V1, 0b00),
            QUIC_V2 => (Version::V2, 0b01),
            _ => panic!("no keys for version {version:#x}"),
        };
        let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .unwrap()
            .quic_suite()
            .unwrap();
        let keys = suite.keys(key_dcid, Side::Client, rustls_version);
        let mut header = vec![0xc0 | (type_bits << 4) | 0x03];
        header.extend(version.to_be_bytes());
        header.push(header_dcid.len() as u8);
        header.extend_from_slice(header_dcid);
        header.push(0); // SCID length
        header.push(0); // Token length
        let length = 4 + payload.len() + 16;
        header.extend((0x4000 | length as u16).to_be_bytes());
        let pn_offset = header.len();
        header.extend(pn.to_be_bytes());
        let mut body = payload.to_vec();
        let tag = keys
            .local
            .packet
            .encrypt_in_place(u64::from(pn), &header, &mut body)
            .unwrap();
        let mut packet = header;
        packet.extend(body);
        packet.extend_from_slice(tag.as_ref());
        let sample = packet[pn_offset + 4..pn_offset + 20].to_vec();
        let (first, rest) = packet.split_first_mut().unwrap();
        keys.local
            .header
            .encrypt_in_place(&sample, first, &mut rest[pn_offset - 1..pn_offset + 3])
            .unwrap();
        packet
    }

    fn seal(version: u32, pn: u32, payload: &[u8]) -> Vec<u8> {
        let dcid = hex(DCID);
        seal_with(version, &dcid, &dcid, pn, payload)
    }

    /// A ClientHello handshake message with these extensions.
    fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend([0x5a; 32]); // random
        body.push(32);
        body.extend([0xa5; 32]); // legacy_session_id
        body.extend([0x00, 0x04, 0x13, 0x01, 0x13, 0x02]); // cipher_suites
        body.extend([0x01, 0x00]); // legacy_compression_methods
        let mut exts = Vec::new();
        for (ext_type, data) in extensions {
            exts.extend(ext_type.to_be_bytes());
            exts.extend((data.len() as u16).to_be_bytes());
            exts.extend_from_slice(data);
        }
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut message = vec![1];
        message.extend(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend(body);
        message
    }

    fn sni_ext(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for (name_type, name) in names {
            list.push(*name_type);
            list.extend((name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        (0, data)
    }

    fn alpn_ext(ids: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for id in ids {
            list.push(id.len() as u8);
            list.extend_from_slice(id);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        (16, data)
    }

    /// A deterministic xorshift generator for the garbage tests.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next_u64() as u8).collect()
        }
    }

    #[test]
    fn rfc9001_client_initial() {
        let packet = hex(RFC9001_CLIENT_INITIAL);
        assert_eq!(packet.len(), 1200);
        assert_eq!(sniff_initial(&packet), Sniffed::Quic(example_com()));
    }

    #[test]
    fn rfc9369_v2_client_initial() {
        let packet = hex(RFC9369_CLIENT_INITIAL);
        assert_eq!(packet.len(), 1200);
        assert_eq!(sniff_initial(&packet), Sniffed::Quic(example_com()));
    }

    #[test]
    fn test_sealer_reproduces_the_rfc_vectors() {
        // Checks the helper the round-trip tests below rely on.
        assert_eq!(
            seal(QUIC_V1, 2, &rfc_payload()),
            hex(RFC9001_CLIENT_INITIAL)
        );
        assert_eq!(
            seal(QUIC_V2, 2, &rfc_payload()),
            hex(RFC9369_CLIENT_INITIAL)
        );
    }

    #[test]
    fn rfc_client_hello_parses_directly() {
        assert_eq!(parse_client_hello(&rfc_client_hello()), Ok(example_com()));
    }

    #[test]
    fn every_truncation_is_not_quic() {
        for vector in [RFC9001_CLIENT_INITIAL, RFC9369_CLIENT_INITIAL] {
            let packet = hex(vector);
            for len in 0..packet.len() {
                assert_eq!(
                    sniff_initial(&packet[..len]),
                    Sniffed::NotQuic,
                    "cut at {len}"
                );
            }
        }
    }

    #[test]
    fn trailing_junk_after_the_packet_is_ignored() {
        let mut datagram = hex(RFC9001_CLIENT_INITIAL);
        datagram.extend([0u8; 37]);
        assert_eq!(sniff_initial(&datagram), Sniffed::Quic(example_com()));
    }

    #[test]
    fn tampering_is_not_quic() {
        let packet = hex(RFC9001_CLIENT_INITIAL);
        // Header fields the AEAD covers, the packet number, the ciphertext and the tag.
        for index in [0, 1, 5, 6, 13, 14, 17, 18, 21, 22, 100, 600, 1183, 1199] {
            let mut tampered = packet.clone();
            tampered[index] ^= 0x01;
            assert_eq!(sniff_initial(&tampered), Sniffed::NotQuic, "byte {index}");
        }
    }

    #[test]
    fn other_packets_are_not_quic() {
        let packet = hex(RFC9001_CLIENT_INITIAL);
        // Short header.
        let mut short = packet.clone();
        short[0] = 0x43;
        assert_eq!(sniff_initial(&short), Sniffed::NotQuic);
        // An unknown version, and Version Negotiation (version 0).
        for version in [0u32, 0xff00_001d, 0x1a2a_3a4a] {
            let mut other = packet.clone();
            other[1..5].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                sniff_initial(&other),
                Sniffed::NotQuic,
                "version {version:#x}"
            );
        }
        // Handshake and 0-RTT long headers first.
        for type_bits in [0x10u8, 0x20] {
            let mut other = packet.clone();
            other[0] = (other[0] & 0xcf) | type_bits;
            assert_eq!(sniff_initial(&other), Sniffed::NotQuic);
        }
        // The fixed bit cleared without a token.
        let mut unfixed = packet.clone();
        unfixed[0] &= !0x40;
        assert_eq!(sniff_initial(&unfixed), Sniffed::NotQuic);
        // A DCID longer than 20 bytes.
        let mut long_cid = packet;
        long_cid[5] = 21;
        assert_eq!(sniff_initial(&long_cid), Sniffed::NotQuic);
        // Not QUIC at all.
        assert_eq!(sniff_initial(b""), Sniffed::NotQuic);
        assert_eq!(sniff_initial(b"GET / HTTP/1.1\r\n\r\n"), Sniffed::NotQuic);
        assert_eq!(sniff_initial(&[0xff; 1200]), Sniffed::NotQuic);
        assert_eq!(sniff_initial(&[0xc0, 0, 0, 0, 1]), Sniffed::NotQuic);
    }

    #[test]
    fn random_bytes_are_not_quic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..3000 {
            let len = rng.below(1400);
            let mut datagram = rng.bytes(len);
            // Most rounds look like a v1/v2 Initial header so the deeper paths run.
            if round % 4 != 0 && datagram.len() > 6 {
                datagram[0] = 0xc0 | (datagram[0] & 0x0f);
                let version = if round % 2 == 0 { QUIC_V1 } else { QUIC_V2 };
                if version == QUIC_V2 {
                    datagram[0] |= 0x10;
                }
                datagram[1..5].copy_from_slice(&version.to_be_bytes());
                datagram[5] %= 21;
            }
            assert_eq!(sniff_initial(&datagram), Sniffed::NotQuic, "round {round}");
        }
    }

    #[test]
    fn coalesced_reordered_crypto_with_acks_and_pings() {
        let hello = rfc_client_hello();
        let (a, rest) = hello.split_at(50);
        let (b, c) = rest.split_at(100);
        // Second packet first in the stream order: [c, a] then [b], with ACKs of both kinds.
        let mut p1 = Vec::new();
        p1.push(0x01); // PING
        p1.extend(crypto(150, c));
        p1.extend([0x02, 0x05, 0x00, 0x01, 0x00, 0x01, 0x01]); // ACK, one extra range
        p1.extend(crypto(0, a));
        p1.extend([0u8; 40]);
        let mut p2 = vec![0x03, 0x05, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03]; // ACK + ECN
        p2.extend(crypto(50, b));
        p2.extend(crypto(0, &hello[..10])); // a consistent duplicate
        p2.extend([0u8; 40]);
        let mut datagram = seal(QUIC_V1, 0, &p1);
        // A 0-RTT packet between them is skipped by its Length field.
        let mut zero_rtt = vec![0xd3, 0, 0, 0, 1, 8];
        zero_rtt.extend(hex(DCID));
        zero_rtt.extend([0x00, 0x40, 0x20]);
        zero_rtt.extend([0x77; 0x20]);
        datagram.extend(zero_rtt);
        datagram.extend(seal(QUIC_V1, 1, &p2));
        assert_eq!(sniff_initial(&datagram), Sniffed::Quic(example_com()));
    }

    #[test]
    fn conflicting_crypto_data_is_not_quic() {
        let hello = rfc_client_hello();
        let mut forged = hello.clone();
        forged[60] ^= 0xff;
        let mut payload = crypto(0, &hello);
        payload.extend(crypto(40, &forged[40..80]));
        assert_eq!(sniff_initial(&seal(QUIC_V1, 0, &payload)), Sniffed::NotQuic);
    }

    #[test]
    fn later_packet_with_another_dcid_is_ignored() {
        let hello = rfc_client_hello();
        let dcid = hex(DCID);
        let mut datagram = seal(QUIC_V1, 0, &crypto(0, &hello[..100]));
        // Protected with the flow's keys, but naming another connection.
        datagram.extend(seal_with(
            QUIC_V1,
            &dcid,
            &[1, 2, 3, 4, 5, 6, 7, 8],
            1,
            &crypto(100, &hello[100..]),
        ));
        assert_eq!(sniff_initial(&datagram), Sniffed::QuicIncomplete);
    }

    #[test]
    fn client_hello_across_datagrams() {
        let hello = rfc_client_hello();
        for version in [QUIC_V1, QUIC_V2] {
            let first = seal(version, 0, &crypto(0, &hello[..120]));
            let second = seal(version, 1, &crypto(120, &hello[120..]));
            assert_eq!(sniff_initial(&first), Sniffed::QuicIncomplete);
            // The second datagram alone has no CRYPTO data at offset 0.
            assert_eq!(sniff_initial(&second), Sniffed::QuicIncomplete);
            assert_eq!(
                sniff_initials([first.as_slice(), second.as_slice()]),
                Sniffed::Quic(example_com())
            );
            // Out of order too: both carry the DCID the keys come from.
            assert_eq!(
                sniff_initials([second.as_slice(), first.as_slice()]),
                Sniffed::Quic(example_com())
            );
            // Garbage as a later datagram is skipped.
            assert_eq!(
                sniff_initials([first.as_slice(), b"junk".as_slice(), second.as_slice()]),
                Sniffed::Quic(example_com())
            );
        }
    }

    #[test]
    fn connection_close_stops_reading() {
        let hello = rfc_client_hello();
        let mut payload = crypto(0, &hello[..100]);
        payload.extend([0x1c, 0x0a, 0x00, 0x00]); // CONNECTION_CLOSE, no reason
        payload.extend(crypto(100, &hello[100..]));
        assert_eq!(
            sniff_initial(&seal(QUIC_V1, 0, &payload)),
            Sniffed::QuicIncomplete
        );
    }

    #[test]
    fn bad_frames_in_an_initial_are_not_quic() {
        let hello = rfc_client_hello();
        // A STREAM frame is not allowed in an Initial packet.
        let mut stream = crypto(0, &hello);
        stream.extend([0x08, 0x00, 0x01, 0x61]);
        assert_eq!(sniff_initial(&seal(QUIC_V1, 0, &stream)), Sniffed::NotQuic);
        // A CRYPTO frame longer than the packet.
        let mut truncated = vec![0x06, 0x00, 0x44, 0x00];
        truncated.extend(&hello[..100]);
        assert_eq!(
            sniff_initial(&seal(QUIC_V1, 0, &truncated)),
            Sniffed::NotQuic
        );
        // An ACK with a range count far beyond the bytes left.
        let mut ack = crypto(0, &hello);
        ack.extend([0x02, 0x00, 0x00, 0xbf, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00]);
        assert_eq!(sniff_initial(&seal(QUIC_V1, 0, &ack)), Sniffed::NotQuic);
        // CRYPTO data that is not a ClientHello.
        let mut server_hello = hello.clone();
        server_hello[0] = 2;
        assert_eq!(
            sniff_initial(&seal(QUIC_V1, 0, &crypto(0, &server_hello))),
            Sniffed::NotQuic
        );
    }

    #[test]
    fn sni_and_alpn_from_a_built_client_hello() {
        let message = client_hello(&[
            (0x0a0a, vec![]), // GREASE
            sni_ext(&[(0, b"Www.Example.COM")]),
            alpn_ext(&[b"h3", b"h3-29"]),
        ]);
        assert_eq!(
            sniff_initial(&seal(QUIC_V2, 7, &crypto(0, &message))),
            Sniffed::Quic(ClientHello {
                sni: Some("www.example.com".into()),
                alpn: vec!["h3".into(), "h3-29".into()],
            })
        );
    }
}
