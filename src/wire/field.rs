//! Field codec: how each kind of value is laid out in a frame body, read
//! back, and sized against the limits.
//!
//! One trait, [`Field`], covers every field type: integers (big-endian),
//! booleans, strings (u16 length + UTF-8), byte payloads (u32 length), lists
//! (u16 count), socket addresses, ids, realms and signed records. Message
//! structs are declared with `wire_struct!` and get
//! their codec from their fields, in declaration order, so the layout of a
//! message is its field list and nothing else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::{BufMut, Bytes};

use crate::id::{NodeId, PublicKey, Realm, RecordKey, SIGNATURE_LEN};
use crate::record::SignedRecord;

use super::{DecodeError, EncodeError, Limits, OverLimit};

/// Which limit bounds a list field.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound {
    /// [`Limits::max_list_len`].
    List,
    /// [`Limits::max_contacts`].
    Contacts,
    /// [`Limits::max_addrs`].
    Addrs,
}

impl Bound {
    /// The largest count the limits and the u16 count prefix allow.
    fn max(self, limits: &Limits) -> usize {
        let max = match self {
            Bound::List => limits.max_list_len,
            Bound::Contacts => limits.max_contacts,
            Bound::Addrs => limits.max_addrs,
        };
        max.min(u16::MAX as usize)
    }
}

/// Where a field sits: its name (for errors) and, for lists, its bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    /// The field's name.
    pub what: &'static str,
    /// The limit on its item count, if it is a list.
    pub bound: Bound,
}

/// A cursor over one frame body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    limits: &'a Limits,
    /// The shared buffer `buf` lies in, if any: byte payloads are then
    /// slices of it instead of copies.
    shared: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    /// A reader over `body`, applying `limits`. When `shared` is given,
    /// `body` MUST lie inside it.
    pub fn new(body: &'a [u8], limits: &'a Limits, shared: Option<&'a Bytes>) -> Self {
        Self {
            buf: body,
            limits,
            shared,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
}

/// A value with a wire layout.
pub(crate) trait Field: Sized {
    /// The fewest bytes any value of the type takes (bounds preallocation).
    const MIN_LEN: usize;

    /// Bytes the value takes, or the limit it breaks.
    fn wire_len(&self, ctx: Ctx, limits: &Limits) -> Result<usize, EncodeError>;

    /// Writes the value; [`Field::wire_len`] has been checked first.
    fn put<B: BufMut + ?Sized>(&self, out: &mut B);

    /// Reads a value.
    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError>;
}

/// Integers: fixed width, big-endian.
macro_rules! int_fields {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const MIN_LEN: usize = size_of::<$t>();

            fn wire_len(&self, _: Ctx, _: &Limits) -> Result<usize, EncodeError> {
                Ok(Self::MIN_LEN)
            }

            fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
                out.put_slice(&self.to_be_bytes());
            }

            fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
                r.array(ctx.what).map(<$t>::from_be_bytes)
            }
        }
    )*};
}
int_fields!(u8, u16, u32, u64);

/// Fixed-size byte arrays (ids, keys, signatures).
impl<const N: usize> Field for [u8; N] {
    const MIN_LEN: usize = N;

    fn wire_len(&self, _: Ctx, _: &Limits) -> Result<usize, EncodeError> {
        Ok(N)
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        out.put_slice(self);
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        r.array(ctx.what)
    }
}

/// Booleans: one byte, 0 or 1.
impl Field for bool {
    const MIN_LEN: usize = 1;

    fn wire_len(&self, _: Ctx, _: &Limits) -> Result<usize, EncodeError> {
        Ok(1)
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        out.put_u8(u8::from(*self));
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        match u8::get(r, ctx)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadEnumValue {
                what: ctx.what,
                value: value.into(),
            }),
        }
    }
}

/// Byte payloads: u32 length, then the bytes (bounded by the frame body);
/// zero-copy when the frame is in a shared [`Bytes`].
impl Field for Bytes {
    const MIN_LEN: usize = 4;

    fn wire_len(&self, ctx: Ctx, _: &Limits) -> Result<usize, EncodeError> {
        OverLimit::check(ctx.what, self.len(), u32::MAX as usize)?;
        Ok(4 + self.len())
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        out.put_u32(u32::try_from(self.len()).unwrap_or(u32::MAX));
        out.put_slice(self);
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        let len = u32::get(r, ctx)? as usize;
        let bytes = r.take(len, ctx.what)?;
        Ok(match r.shared {
            Some(shared) => shared.slice_ref(bytes),
            None => Bytes::copy_from_slice(bytes),
        })
    }
}

/// Strings: u16 length, then UTF-8, at most [`Limits::max_string_len`] bytes.
fn str_len(s: &str, ctx: Ctx, limits: &Limits) -> Result<usize, EncodeError> {
    OverLimit::check(ctx.what, s.len(), max_string(limits))?;
    Ok(2 + s.len())
}

fn put_str<B: BufMut + ?Sized>(s: &str, out: &mut B) {
    out.put_u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
    out.put_slice(s.as_bytes());
}

fn get_str<'a>(r: &mut Reader<'a>, ctx: Ctx) -> Result<&'a str, DecodeError> {
    let len = u16::get(r, ctx)? as usize;
    OverLimit::check(ctx.what, len, max_string(r.limits))?;
    let bytes = r.take(len, ctx.what)?;
    core::str::from_utf8(bytes).map_err(|e| DecodeError::BadUtf8 {
        what: ctx.what,
        valid_up_to: e.valid_up_to(),
    })
}

fn max_string(limits: &Limits) -> usize {
    limits.max_string_len.min(u16::MAX as usize)
}

/// Owned strings ([`String`]) and shared ones (`Arc<str>`: a PUBLISH's
/// topic, handed to every frame of a batch and every subscriber without a
/// copy) are the same on the wire.
macro_rules! string_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const MIN_LEN: usize = 2;

            fn wire_len(&self, ctx: Ctx, limits: &Limits) -> Result<usize, EncodeError> {
                str_len(self, ctx, limits)
            }

            fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
                put_str(self, out);
            }

            fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
                get_str(r, ctx).map(<$t>::from)
            }
        }
    )*};
}

string_field!(String, Arc<str>);

/// Realms: a string that must also follow the realm syntax.
impl Field for Realm {
    const MIN_LEN: usize = 2;

    fn wire_len(&self, ctx: Ctx, limits: &Limits) -> Result<usize, EncodeError> {
        str_len(self.as_str(), ctx, limits)
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        put_str(self.as_str(), out);
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        Realm::new(get_str(r, ctx)?).map_err(|source| DecodeError::BadRealm {
            what: ctx.what,
            source,
        })
    }
}

/// Lists: u16 count, then the items, at most the count the field's
/// [`Bound`] allows.
impl<T: Field> Field for Vec<T> {
    const MIN_LEN: usize = 2;

    fn wire_len(&self, ctx: Ctx, limits: &Limits) -> Result<usize, EncodeError> {
        OverLimit::check(ctx.what, self.len(), ctx.bound.max(limits))?;
        self.iter()
            .try_fold(2, |sum, item| Ok(sum + item.wire_len(ctx, limits)?))
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        out.put_u16(u16::try_from(self.len()).unwrap_or(u16::MAX));
        self.iter().for_each(|item| item.put(out));
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        let count = u16::get(r, ctx)? as usize;
        OverLimit::check(ctx.what, count, ctx.bound.max(r.limits))?;
        // Never allocate for more items than the remaining bytes can hold.
        let needed = count.saturating_mul(T::MIN_LEN);
        if needed > r.remaining() {
            return Err(DecodeError::Truncated {
                what: ctx.what,
                needed,
                available: r.remaining(),
            });
        }
        (0..count).map(|_| T::get(r, ctx)).collect()
    }
}

/// Socket addresses: family (4 or 6), the address, the port (u16). IPv6 flow
/// info and scope id are not carried.
impl Field for SocketAddr {
    const MIN_LEN: usize = 1 + 4 + 2;

    fn wire_len(&self, _: Ctx, _: &Limits) -> Result<usize, EncodeError> {
        Ok(match self {
            SocketAddr::V4(_) => Self::MIN_LEN,
            SocketAddr::V6(_) => 1 + 16 + 2,
        })
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        match self.ip() {
            IpAddr::V4(ip) => {
                out.put_u8(4);
                out.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.put_u8(6);
                out.put_slice(&ip.octets());
            }
        }
        out.put_u16(self.port());
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        let ip = match u8::get(r, ctx)? {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>(ctx.what)?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>(ctx.what)?)),
            family => {
                return Err(DecodeError::BadAddressFamily {
                    what: ctx.what,
                    family,
                });
            }
        };
        Ok(SocketAddr::new(ip, u16::get(r, ctx)?))
    }
}

/// Ids and keys with a fixed byte layout.
macro_rules! id_fields {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const MIN_LEN: usize = crate::id::ID_LEN;

            fn wire_len(&self, _: Ctx, _: &Limits) -> Result<usize, EncodeError> {
                Ok(Self::MIN_LEN)
            }

            fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
                out.put_slice(self.as_bytes());
            }

            fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
                r.array(ctx.what).map(<$t>::from_bytes)
            }
        }
    )*};
}
id_fields!(NodeId, RecordKey);

/// Ed25519 public keys: 32 bytes that must be a valid point.
impl Field for PublicKey {
    const MIN_LEN: usize = 32;

    fn wire_len(&self, _: Ctx, _: &Limits) -> Result<usize, EncodeError> {
        Ok(Self::MIN_LEN)
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        out.put_slice(&self.to_bytes());
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        PublicKey::from_bytes(&r.array(ctx.what)?)
            .map_err(|_| DecodeError::InvalidPublicKey { what: ctx.what })
    }
}

/// Signed records: key 32 | publisher 32 | issued_at_ms u64 | ttl_secs u32 |
/// value (u32 length + bytes) | signature 64. The signature is parsed, not
/// verified: that is the DHT's job.
impl Field for SignedRecord {
    const MIN_LEN: usize = 32 + 32 + 8 + 4 + 4 + SIGNATURE_LEN;

    fn wire_len(&self, ctx: Ctx, limits: &Limits) -> Result<usize, EncodeError> {
        Ok(Self::MIN_LEN - 4 + self.value.wire_len(ctx, limits)?)
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        self.key.put(out);
        self.publisher.put(out);
        self.issued_at_ms.put(out);
        self.ttl_secs.put(out);
        self.value.put(out);
        self.signature.put(out);
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        Ok(SignedRecord {
            key: Field::get(r, ctx)?,
            publisher: Field::get(r, ctx)?,
            issued_at_ms: Field::get(r, ctx)?,
            ttl_secs: Field::get(r, ctx)?,
            value: Field::get(r, ctx)?,
            signature: Field::get(r, ctx)?,
        })
    }
}

/// Boxed values (large ones, kept out of the [`Message`](super::Message)
/// enum's size): the same layout as the value.
impl<T: Field> Field for Box<T> {
    const MIN_LEN: usize = T::MIN_LEN;

    fn wire_len(&self, ctx: Ctx, limits: &Limits) -> Result<usize, EncodeError> {
        T::wire_len(self, ctx, limits)
    }

    fn put<B: BufMut + ?Sized>(&self, out: &mut B) {
        T::put(self, out);
    }

    fn get(r: &mut Reader<'_>, ctx: Ctx) -> Result<Self, DecodeError> {
        T::get(r, ctx).map(Box::new)
    }
}

/// Declares a struct whose wire layout is its fields in order. A list field
/// may name its bound after a `;` (`pub addrs: Vec<SocketAddr>; Addrs`); the
/// default is [`Bound::List`].
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident : $ty:ty $(; $bound:ident)?,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $crate::wire::field::Field for $name {
            const MIN_LEN: usize = 0 $(+ <$ty as $crate::wire::field::Field>::MIN_LEN)*;

            fn wire_len(
                &self,
                _: $crate::wire::field::Ctx,
                _limits: &$crate::wire::Limits,
            ) -> Result<usize, $crate::wire::EncodeError> {
                Ok(0 $(+ $crate::wire::field::Field::wire_len(
                    &self.$field,
                    $crate::wire::field::ctx!($field $(, $bound)?),
                    _limits,
                )?)*)
            }

            fn put<B: bytes::BufMut + ?Sized>(&self, _out: &mut B) {
                $($crate::wire::field::Field::put(&self.$field, _out);)*
            }

            fn get(
                _r: &mut $crate::wire::field::Reader<'_>,
                _: $crate::wire::field::Ctx,
            ) -> Result<Self, $crate::wire::DecodeError> {
                Ok(Self {
                    $($field: $crate::wire::field::Field::get(
                        _r,
                        $crate::wire::field::ctx!($field $(, $bound)?),
                    )?,)*
                })
            }
        }
    };
}
pub(crate) use wire_struct;

/// The [`Ctx`] of a field: its name and its bound (default [`Bound::List`]).
macro_rules! ctx {
    ($field:ident) => {
        $crate::wire::field::Ctx {
            what: stringify!($field),
            bound: $crate::wire::field::Bound::List,
        }
    };
    ($field:ident, $bound:ident) => {
        $crate::wire::field::Ctx {
            what: stringify!($field),
            bound: $crate::wire::field::Bound::$bound,
        }
    };
}
pub(crate) use ctx;

/// Declares a code enumeration carried as `$repr`. Codes this version does
/// not know decode to `Unknown(code)` and encode back unchanged, so newer
/// peers can add codes; equality compares codes, so `Unknown(c)` of a known
/// code equals the known variant.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ty {
            $($(#[$vmeta:meta])* $variant:ident = $code:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A code this version does not know, kept as received.
            Unknown($repr),
        }

        impl $name {
            /// Every known value, in code order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),*];

            /// The value a wire code stands for.
            pub const fn from_code(code: $repr) -> Self {
                match code {
                    $($code => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

            /// The wire code.
            pub const fn code(self) -> $repr {
                match self {
                    $($name::$variant => $code,)*
                    $name::Unknown(code) => code,
                }
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.code() == other.code()
            }
        }

        impl Eq for $name {}

        impl $crate::wire::field::Field for $name {
            const MIN_LEN: usize = size_of::<$repr>();

            fn wire_len(
                &self,
                _: $crate::wire::field::Ctx,
                _: &$crate::wire::Limits,
            ) -> Result<usize, $crate::wire::EncodeError> {
                Ok(Self::MIN_LEN)
            }

            fn put<B: bytes::BufMut + ?Sized>(&self, out: &mut B) {
                $crate::wire::field::Field::put(&self.code(), out);
            }

            fn get(
                r: &mut $crate::wire::field::Reader<'_>,
                ctx: $crate::wire::field::Ctx,
            ) -> Result<Self, $crate::wire::DecodeError> {
                <$repr as $crate::wire::field::Field>::get(r, ctx).map(Self::from_code)
            }
        }
    };
}
pub(crate) use wire_enum;
