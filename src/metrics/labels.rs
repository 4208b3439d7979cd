//! Label values as small enums, and values kept per label value.
//!
//! Each enum names one label (its key) and its values; [`PerLabel`] holds
//! one value (a counter, a gauge, a histogram) for each, indexed without
//! hashing or allocation.

/// A label key and value as exported, e.g. `("outcome", "ok")`.
pub type Label = (&'static str, &'static str);

/// An enum whose variants are the values of one label.
pub trait LabelValue: Copy + Eq + std::fmt::Debug + 'static {
    /// Every value, in export order.
    const ALL: &'static [Self];
    /// The label key.
    const KEY: &'static str;
    /// This value's position in [`LabelValue::ALL`].
    fn index(self) -> usize;
    /// The exported value.
    fn as_str(self) -> &'static str;
    /// The label set of a series labelled with this value alone.
    fn labels(self) -> &'static [Label];
}

/// Defines a label enum: `label_enum!(Name, "key", { Variant => "value", ... })`.
macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident, $key:literal, { $($(#[$vmeta:meta])* $variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::metrics::LabelValue for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            const KEY: &'static str = $key;

            fn index(self) -> usize {
                self as usize
            }

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value),+
                }
            }

            fn labels(self) -> &'static [$crate::metrics::Label] {
                match self {
                    $(Self::$variant => &[($key, $value)]),+
                }
            }
        }
    };
}

pub(crate) use label_enum;

/// One `T` per value of the label `L` (`N` = the number of values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerLabel<L, T, const N: usize> {
    values: [T; N],
    label: std::marker::PhantomData<L>,
}

impl<L: LabelValue, T, const N: usize> PerLabel<L, T, N> {
    /// Every value set to `init`.
    pub fn new(init: T) -> Self
    where
        T: Clone,
    {
        assert_eq!(N, L::ALL.len(), "one slot per label value");
        Self {
            values: std::array::from_fn(|_| init.clone()),
            label: std::marker::PhantomData,
        }
    }

    /// The value for `label`.
    pub fn get(&self, label: L) -> &T {
        &self.values[label.index()]
    }

    /// The value for `label`, to change.
    pub fn get_mut(&mut self, label: L) -> &mut T {
        &mut self.values[label.index()]
    }

    /// Sets the value of each label in `values` (counters copied from a
    /// child's own counts).
    pub fn set_each(&mut self, values: impl IntoIterator<Item = (L, T)>) {
        for (label, value) in values {
            *self.get_mut(label) = value;
        }
    }

    /// Every label value with its value, in export order.
    pub fn iter(&self) -> impl Iterator<Item = (L, &T)> + '_ {
        L::ALL.iter().copied().zip(self.values.iter())
    }
}

impl<L: LabelValue, const N: usize> PerLabel<L, u64, N> {
    /// Adds one to `label`'s counter.
    pub fn bump(&mut self, label: L) {
        self.add(label, 1);
    }

    /// Adds `n` to `label`'s counter (saturating).
    pub fn add(&mut self, label: L, n: u64) {
        let value = self.get_mut(label);
        *value = value.saturating_add(n);
    }

    /// The sum over every label value.
    pub fn total(&self) -> u64 {
        self.values.iter().fold(0, |sum, v| sum.saturating_add(*v))
    }
}

impl<L: LabelValue, T: Default + Clone, const N: usize> Default for PerLabel<L, T, N> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    label_enum!(
        /// A test label.
        Colour, "colour", { Red => "red", Green => "green" }
    );

    #[test]
    fn values_are_kept_per_label() {
        let mut per: PerLabel<Colour, u64, 2> = PerLabel::default();
        per.bump(Colour::Green);
        per.add(Colour::Green, 2);
        per.add(Colour::Red, u64::MAX);
        per.bump(Colour::Red);
        assert_eq!(*per.get(Colour::Green), 3);
        assert_eq!(*per.get(Colour::Red), u64::MAX);
        let pairs: Vec<(&str, u64)> = per.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        assert_eq!(pairs, vec![("red", u64::MAX), ("green", 3)]);
        assert_eq!(Colour::Green.labels(), &[("colour", "green")]);
        assert_eq!(Colour::KEY, "colour");
    }
}
