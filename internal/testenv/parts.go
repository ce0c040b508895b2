package testenv

// Parts returns how many UploadPart requests went through for bucket/key.
func (p *Proxy) Parts(bucketKey string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.parts[bucketKey]
}
