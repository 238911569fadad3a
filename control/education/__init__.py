"""Traffic-safety education sessions (cases of kind ``education``): many drivers watching one
officer, attendance and completion. Nothing lives here yet; the education issue puts it here."""
