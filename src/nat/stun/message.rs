//! The STUN message model: header fields and the attributes macula reads and writes.
//!
//! Values here are valid by construction (a [`Method`] fits 12 bits, a [`StunText`] fits the
//! RFC 8489 text bound, an [`ErrorCode`] lies in 300–699), so encoding never has to reject a
//! message for its content, only for its total size.

use std::net::SocketAddr;

use smallvec::SmallVec;

/// The 96-bit transaction id that pairs a response with its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

/// The class of a message: the two class bits of the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request: expects a success or error response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response (carries ERROR-CODE).
    Error,
}

impl Class {
    /// The two class bits (C1 C0) as a number 0–3.
    pub(crate) fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }

    /// The class for two class bits; only the low two bits of `bits` count.
    pub(crate) fn from_bits(bits: u16) -> Class {
        match bits & 3 {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// A STUN method: a 12-bit number (Binding is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    /// The Binding method, the only one macula answers.
    pub const BINDING: Method = Method(0x001);

    /// The method numbered `number`, if it fits 12 bits.
    pub fn new(number: u16) -> Option<Method> {
        (number < 0x1000).then_some(Method(number))
    }

    /// The method numbered by the low 12 bits of `number`.
    pub(crate) fn from_low_bits(number: u16) -> Method {
        Method(number & 0x0FFF)
    }

    /// The method's number.
    pub fn number(self) -> u16 {
        self.0
    }
}

/// What went wrong building a STUN value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A text value is longer than RFC 8489 allows.
    #[error("text is {bytes} bytes and {chars} characters; at most {max_bytes} bytes and {max_chars} characters", max_bytes = StunText::MAX_BYTES, max_chars = StunText::MAX_CHARS)]
    TextTooLong {
        /// Its length in bytes.
        bytes: usize,
        /// Its length in characters.
        chars: usize,
    },
    /// An error code outside 300–699.
    #[error("error code {0} is outside 300..=699")]
    ErrorCodeOutOfRange(u16),
}

/// UTF-8 text of a SOFTWARE attribute or an error reason phrase: fewer than 128 characters
/// and at most 763 bytes (RFC 8489 §14.8, §14.14).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StunText(String);

impl StunText {
    /// The most bytes a text value may have.
    pub const MAX_BYTES: usize = 763;
    /// The most characters a text value we build may have (decoded text is only held to
    /// [`MAX_BYTES`](Self::MAX_BYTES)).
    pub const MAX_CHARS: usize = 127;

    /// Checks `text` against both bounds.
    pub fn new(text: &str) -> Result<StunText, ValueError> {
        let chars = text.chars().count();
        if text.len() > Self::MAX_BYTES || chars > Self::MAX_CHARS {
            return Err(ValueError::TextTooLong {
                bytes: text.len(),
                chars,
            });
        }
        Ok(StunText(text.to_owned()))
    }

    /// Wraps decoded text already held to [`MAX_BYTES`](Self::MAX_BYTES).
    pub(crate) fn decoded(text: String) -> StunText {
        StunText(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ERROR-CODE attribute: a code in 300–699 and a reason phrase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode {
    code: u16,
    reason: StunText,
}

impl ErrorCode {
    /// 420 Unknown Attribute: the request had comprehension-required attributes the server
    /// does not know (listed in UNKNOWN-ATTRIBUTES).
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;

    /// An error code with its reason; `code` must lie in 300–699.
    pub fn new(code: u16, reason: StunText) -> Result<ErrorCode, ValueError> {
        if !(300..700).contains(&code) {
            return Err(ValueError::ErrorCodeOutOfRange(code));
        }
        Ok(ErrorCode { code, reason })
    }

    /// 420 Unknown Attribute with its usual reason phrase.
    pub(crate) fn unknown_attribute() -> ErrorCode {
        ErrorCode {
            code: Self::UNKNOWN_ATTRIBUTE,
            reason: StunText("Unknown Attribute".to_owned()),
        }
    }

    /// The code, 300–699.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The reason phrase.
    pub fn reason(&self) -> &StunText {
        &self.reason
    }
}

/// A CHANGE-REQUEST attribute (RFC 5780 §7.2): asks the server to answer from its other IP
/// address, its other port, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChangeRequest {
    /// Answer from the alternate IP address.
    pub change_ip: bool,
    /// Answer from the alternate port.
    pub change_port: bool,
}

impl ChangeRequest {
    /// True when the request asks for any change.
    pub fn any(self) -> bool {
        self.change_ip || self.change_port
    }
}

/// The attribute types macula understands, by their registered numbers.
pub mod kind {
    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// CHANGE-REQUEST (RFC 5780 §7.2).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// ERROR-CODE (RFC 8489 §14.8).
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9).
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): written and checked by
    /// [`crate::nat::stun::IntegrityKey`], never an [`Attribute`](super::Attribute).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// SOFTWARE (RFC 8489 §14.14).
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT (RFC 8489 §14.7).
    pub const FINGERPRINT: u16 = 0x8028;
    /// RESPONSE-ORIGIN (RFC 5780 §7.3).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS (RFC 5780 §7.4).
    pub const OTHER_ADDRESS: u16 = 0x802C;

    /// True for comprehension-required types (0x0000–0x7FFF): a receiver that does not know
    /// one must not process the message as if it were absent.
    pub fn comprehension_required(kind: u16) -> bool {
        kind < 0x8000
    }
}

/// One attribute macula understands. FINGERPRINT is not here: it is a property of the whole
/// message ([`Message::fingerprint`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// The reflexive address in the clear (RFC 3489 servers send only this).
    MappedAddress(SocketAddr),
    /// The reflexive address, XOR-ed with the cookie and transaction id on the wire.
    XorMappedAddress(SocketAddr),
    /// The address the response was sent from.
    ResponseOrigin(SocketAddr),
    /// The server's alternate address (differs from the request's destination in IP and port).
    OtherAddress(SocketAddr),
    /// Which address the response should come from.
    ChangeRequest(ChangeRequest),
    /// The sender's software description.
    Software(StunText),
    /// The error of an error response.
    ErrorCode(ErrorCode),
    /// The comprehension-required attribute types a request carried that the server does not
    /// know (with a 420 error).
    UnknownAttributes(SmallVec<[u16; 4]>),
}

impl Attribute {
    /// The attribute's registered type number.
    pub fn kind(&self) -> u16 {
        match self {
            Attribute::MappedAddress(_) => kind::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => kind::XOR_MAPPED_ADDRESS,
            Attribute::ResponseOrigin(_) => kind::RESPONSE_ORIGIN,
            Attribute::OtherAddress(_) => kind::OTHER_ADDRESS,
            Attribute::ChangeRequest(_) => kind::CHANGE_REQUEST,
            Attribute::Software(_) => kind::SOFTWARE,
            Attribute::ErrorCode(_) => kind::ERROR_CODE,
            Attribute::UnknownAttributes(_) => kind::UNKNOWN_ATTRIBUTES,
        }
    }
}

/// A STUN message: header fields, attributes in wire order, and whether it ends with a
/// FINGERPRINT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Request, indication, success or error.
    pub class: Class,
    /// The method (Binding for everything macula sends).
    pub method: Method,
    /// Pairs a response with its request.
    pub transaction_id: TransactionId,
    /// The attributes in wire order. A type may repeat; readers use the first.
    pub attributes: Vec<Attribute>,
    /// Whether the message ends with a FINGERPRINT (the encoder computes it; the decoder
    /// checks it).
    pub fingerprint: bool,
}

impl Message {
    /// A Binding message of `class` with no attributes and a FINGERPRINT.
    pub fn binding(class: Class, transaction_id: TransactionId) -> Message {
        Message {
            class,
            method: Method::BINDING,
            transaction_id,
            attributes: Vec::new(),
            fingerprint: true,
        }
    }

    /// The reflexive address: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (RFC 3489 servers).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(addr) => Some(*addr),
            _ => None,
        })
        .or_else(|| {
            self.find(|a| match a {
                Attribute::MappedAddress(addr) => Some(*addr),
                _ => None,
            })
        })
    }

    /// The first RESPONSE-ORIGIN.
    pub fn response_origin(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::ResponseOrigin(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The first OTHER-ADDRESS.
    pub fn other_address(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::OtherAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The first CHANGE-REQUEST, or no change.
    pub fn change_request(&self) -> ChangeRequest {
        self.find(|a| match a {
            Attribute::ChangeRequest(change) => Some(*change),
            _ => None,
        })
        .unwrap_or_default()
    }

    /// The first ERROR-CODE.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::ErrorCode(error) => Some(error),
            _ => None,
        })
    }

    fn find<T>(&self, pick: impl FnMut(&Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bounds_are_checked_in_bytes_and_characters() {
        assert!(StunText::new(&"a".repeat(127)).is_ok());
        assert_eq!(
            StunText::new(&"a".repeat(128)),
            Err(ValueError::TextTooLong {
                bytes: 128,
                chars: 128
            })
        );
        // 127 four-byte characters are 508 bytes: within both bounds.
        assert!(StunText::new(&"\u{1F600}".repeat(127)).is_ok());
    }

    #[test]
    fn error_codes_outside_300_to_699_are_refused() {
        let reason = StunText::default();
        assert!(ErrorCode::new(299, reason.clone()).is_err());
        assert!(ErrorCode::new(300, reason.clone()).is_ok());
        assert!(ErrorCode::new(699, reason.clone()).is_ok());
        assert_eq!(
            ErrorCode::new(700, reason),
            Err(ValueError::ErrorCodeOutOfRange(700))
        );
    }

    #[test]
    fn methods_are_twelve_bits() {
        assert_eq!(Method::new(0xFFF).map(Method::number), Some(0xFFF));
        assert_eq!(Method::new(0x1000), None);
    }

    #[test]
    fn xor_mapped_address_wins_over_mapped_address() {
        let clear: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let xored: SocketAddr = "192.0.2.2:2".parse().unwrap();
        let mut m = Message::binding(Class::Success, TransactionId([0; 12]));
        m.attributes.push(Attribute::MappedAddress(clear));
        assert_eq!(m.mapped_address(), Some(clear));
        m.attributes.push(Attribute::XorMappedAddress(xored));
        assert_eq!(m.mapped_address(), Some(xored));
    }
}
