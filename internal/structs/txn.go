package structs

// TxnKVOp is one KV operation of a transaction (PUT /v1/txn).
type TxnKVOp struct {
	Verb    string
	Key     string
	Value   []byte
	Flags   uint64
	Index   uint64
	Session string
}

// TxnOp is one operation of a transaction; only KV operations exist so far.
type TxnOp struct {
	KV *TxnKVOp `json:",omitempty"`
}

// TxnResult is the result of one operation.
type TxnResult struct {
	KV *DirEntry `json:",omitempty"`
}

// TxnError names the operation that failed a transaction and why.
type TxnError struct {
	OpIndex int
	What    string
}

// TxnResponse is the body PUT /v1/txn answers with.
type TxnResponse struct {
	Results []*TxnResult
	Errors  []*TxnError
}

// MaxTxnOps is the most operations one transaction may hold.
const MaxTxnOps = 128
