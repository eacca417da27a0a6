//! Pages of a list, in the Svix shape: at most `limit` items after an opaque iterator (the last
//! item's public id), and whether the list is done.

/// Items per page when the caller names no limit, and at most.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 250;

/// What page to read.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Items at most (clamped to 1..=[`MAX_LIMIT`]).
    pub limit: Option<i64>,
    /// The iterator of the previous page: the public id of its last item.
    pub iterator: Option<String>,
}

impl PageRequest {
    /// The limit in force.
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }

    /// Rows to fetch: one more than the limit, to know whether the list goes on.
    pub fn fetch(&self) -> i64 {
        self.limit() + 1
    }
}

/// One page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass back to read the next page.
    pub iterator: Option<String>,
    pub done: bool,
}

impl<T> Page<T> {
    /// The page of `rows` (fetched with [`PageRequest::fetch`]); `id` gives an item's public id.
    pub fn of(mut rows: Vec<T>, request: &PageRequest, id: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(request.limit()).unwrap_or(usize::MAX);
        let done = rows.len() <= limit;
        rows.truncate(limit);
        let iterator = rows.last().map(&id);
        Self { data: rows, iterator, done }
    }

    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { data: self.data.into_iter().map(f).collect(), iterator: self.iterator, done: self.done }
    }
}
