package mesh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/flynn/noise"
)

// End-to-end sessions (docs/PROTOCOL.md, "End-to-end sessions").
//
// A routed frame whose destination is not the next hop is sealed between
// its origin and its destination, so the relays between them can read the
// routed header (to forward it) but neither read nor change the body, nor
// forge a frame from anyone but themselves. The two nodes agree on keys
// with Noise_KK_25519_ChaChaPoly_BLAKE2s, carried in routed e2e_init and
// e2e_resp frames: each knows the other's Noise static key from its signed
// topology entry. Like WireGuard's transport, sealed frames carry their
// receiver's session index and an explicit counter, because routed frames
// may arrive out of order while routes change; a sliding window refuses
// replays. A frame to a direct peer travels unsealed: the link's own Noise
// session already authenticates it, and a plain routed frame is accepted
// only from the link peer that is its origin.

const e2ePrologue = "clawmatrix/2 e2e"

// replayWindow is how far behind the highest counter seen a sealed frame may
// arrive; more than a stream's flow-control window of frames in flight.
const replayWindow = 2048

// maxSessionsPerPeer bounds the sessions kept per peer (both nodes may
// start one at once, and an old one stays usable while a new one settles).
const maxSessionsPerPeer = 3

// maxQueuedFrames bounds the frames waiting for a session per peer.
const maxQueuedFrames = 256

var errNoSession = errors.New("no end-to-end session yet")

type sessions struct {
	n  *Node
	mu sync.Mutex
	// peers and byIndex are guarded by mu.
	peers   map[string]*peerSessions
	byIndex map[uint32]*session
	lastTS  uint64 // the latest timestamp this node sent in an e2e_init
}

type peerSessions struct {
	live    []*session // newest last; the newest is used for sending
	pending *pendingHandshake
	// lastTS is the newest e2e_init timestamp accepted from the peer, for
	// the peer's static key lastStatic: an older one is a replay.
	lastTS     uint64
	lastStatic []byte
}

type pendingHandshake struct {
	hs      *noise.HandshakeState
	index   uint32
	static  []byte
	done    chan struct{} // closed when the handshake ends either way
	queued  []queuedFrame
	timer   *time.Timer
	failure error
}

type queuedFrame struct {
	f    *Frame
	lane string
}

type session struct {
	peer          string
	static        []byte // the peer's Noise static key
	local, remote uint32 // session indices: ours (the peer puts it in frames to us) and the peer's
	send, recv    noise.Cipher

	sendCtr uint64 // guarded by sendMu
	sendMu  sync.Mutex

	recvMu sync.Mutex
	top    uint64 // highest counter accepted + 1
	bitmap [replayWindow / 64]uint64
}

func newSessions(n *Node) *sessions {
	return &sessions{n: n, peers: make(map[string]*peerSessions), byIndex: make(map[uint32]*session)}
}

func (s *sessions) peerLocked(id string) *peerSessions {
	p := s.peers[id]
	if p == nil {
		p = &peerSessions{}
		s.peers[id] = p
	}
	return p
}

// newIndexLocked picks an unused random session index.
func (s *sessions) newIndexLocked() uint32 {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		i := binary.BigEndian.Uint32(b[:])
		if _, used := s.byIndex[i]; i != 0 && !used {
			return i
		}
	}
}

// current returns the session to seal frames to peer with, if any.
func (s *sessions) current(peer string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.peers[peer]; p != nil && len(p.live) > 0 {
		return p.live[len(p.live)-1]
	}
	return nil
}

// forget drops every session with peer (it restarted, or is no longer
// trusted); frames sealed for them can no longer be opened.
func (s *sessions) forget(peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peers[peer]
	if p == nil {
		return
	}
	for _, ss := range p.live {
		delete(s.byIndex, ss.local)
	}
	p.live = nil
	if p.pending != nil {
		s.failPendingLocked(p, errors.New("the peer restarted"))
	}
	delete(s.peers, peer)
}

func (s *sessions) addLocked(p *peerSessions, ss *session) {
	s.byIndex[ss.local] = ss
	p.live = append(p.live, ss)
	if len(p.live) > maxSessionsPerPeer {
		delete(s.byIndex, p.live[0].local)
		p.live[0] = nil
		p.live = p.live[1:]
	}
}

// peerStatic returns peer's Noise static key as this node knows it: from
// the direct link, else from the peer's signed topology entry.
func (n *Node) peerStatic(peer string) []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.links[peer]; l != nil && !l.isDown() {
		return l.static
	}
	if e := n.topo.entries[peer]; e != nil {
		return e.Static
	}
	return nil
}

// await returns the session for peer, starting a handshake if none is
// under way. With ctx nil it never waits: f (if not nil) is queued and sent
// when the session is up, and errNoSession is returned.
func (s *sessions) await(ctx context.Context, peer string, f *Frame, lane string) (*session, error) {
	s.mu.Lock()
	p := s.peerLocked(peer)
	if len(p.live) > 0 {
		ss := p.live[len(p.live)-1]
		s.mu.Unlock()
		return ss, nil
	}
	if p.pending == nil {
		if err := s.startLocked(peer, p); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	ph := p.pending
	if ctx == nil {
		if f != nil && len(ph.queued) < maxQueuedFrames {
			ph.queued = append(ph.queued, queuedFrame{f: f, lane: lane})
		}
		s.mu.Unlock()
		return nil, errNoSession
	}
	s.mu.Unlock()
	select {
	case <-ph.done:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ph.failure != nil {
		return nil, ph.failure
	}
	if p := s.peers[peer]; p != nil && len(p.live) > 0 {
		return p.live[len(p.live)-1], nil
	}
	return nil, unreachable(peer, "end-to-end session lost")
}

// startLocked sends an e2e_init to peer.
func (s *sessions) startLocked(peer string, p *peerSessions) error {
	n := s.n
	static := n.peerStatic(peer)
	if static == nil {
		return unreachable(peer, "its node key is not known yet")
	}
	hs, err := n.newE2EHandshake(true, static)
	if err != nil {
		return err
	}
	ts := max(uint64(time.Now().UnixNano()), s.lastTS+1)
	s.lastTS = ts
	msg, _, _, err := hs.WriteMessage(nil, binary.BigEndian.AppendUint64(nil, ts))
	if err != nil {
		return err
	}
	idx := s.newIndexLocked()
	ph := &pendingHandshake{hs: hs, index: idx, static: static, done: make(chan struct{})}
	p.pending = ph
	s.byIndex[idx] = nil // reserved until the answer
	ph.timer = time.AfterFunc(n.cfg.AuthTimeout, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if p.pending == ph {
			s.failPendingLocked(p, unreachable(peer, "no answer to the end-to-end handshake"))
		}
	})
	// The initiator's node key and its signature over the static key ride
	// along, so a responder that has not yet received the initiator's
	// topology entry can still answer.
	body := binary.BigEndian.AppendUint32(nil, idx)
	body = append(body, n.pub...)
	body = append(body, n.static.Public...)
	body = append(body, n.staticSig...)
	body = append(body, msg...)
	go n.sendHandshakeFrame(peer, typeE2EInit, body)
	return nil
}

func (s *sessions) failPendingLocked(p *peerSessions, err error) {
	ph := p.pending
	p.pending = nil
	ph.failure = err
	ph.queued = nil
	ph.timer.Stop()
	if s.byIndex[ph.index] == nil {
		delete(s.byIndex, ph.index)
	}
	close(ph.done)
}

// sendHandshakeFrame sends an e2e handshake frame toward peer. It runs on
// its own goroutine, as the caller may hold locks or be a link's reader.
//
// With no route to peer yet it waits for one, up to AuthTimeout: a node
// that has just joined through a relay often gets an e2e_init from a peer
// before its own routes take that peer in (routes follow gossip by up to
// routeDelay), and dropping the answer would fail the first request.
func (n *Node) sendHandshakeFrame(peer string, typ byte, body []byte) {
	if !n.enter() {
		return
	}
	defer n.wg.Done()
	f := &Frame{Type: typ, ID: n.newFrameID(), From: n.id, To: peer, TTL: uint8(min(n.cfg.MaxHops, 255)), Payload: body}
	deadline := time.NewTimer(n.cfg.AuthTimeout)
	defer deadline.Stop()
	for {
		changed := n.Changed() // before the lookup, so no change is missed
		if l := n.routes.Load().next[peer]; l != nil {
			_ = l.q.pushCtrl(encodeFrame(f))
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			n.log.Debug("mesh: no route for an e2e handshake frame", "to", peer)
			return
		case <-n.ctx.Done():
			return
		}
	}
}

func (n *Node) newE2EHandshake(initiator bool, peerStatic []byte) (*noise.HandshakeState, error) {
	return noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeKK,
		Initiator:     initiator,
		Prologue:      []byte(e2ePrologue),
		StaticKeypair: n.static,
		PeerStatic:    peerStatic,
	})
}

// onInit answers an e2e_init from f.From.
func (s *sessions) onInit(f *Frame) {
	n := s.n
	const head = 4 + ed25519.PublicKeySize + 32 + ed25519.SignatureSize
	if len(f.Payload) < head {
		return
	}
	theirs := binary.BigEndian.Uint32(f.Payload)
	key := ed25519.PublicKey(f.Payload[4 : 4+ed25519.PublicKeySize])
	static := f.Payload[4+ed25519.PublicKeySize : 4+ed25519.PublicKeySize+32]
	sig := f.Payload[4+ed25519.PublicKeySize+32 : head]
	if !verifyStatic(key, static, sig) {
		n.stats.spoofed.Add(1)
		return
	}
	if err := n.trust.Admit(f.From, key); err != nil {
		n.stats.spoofed.Add(1)
		n.mu.Lock()
		n.logUntrusted(f.From, key, "e2e", err)
		n.mu.Unlock()
		return
	}
	static = append([]byte(nil), static...)
	hs, err := n.newE2EHandshake(false, static)
	if err != nil {
		return
	}
	payload, _, _, err := hs.ReadMessage(nil, f.Payload[head:])
	if err != nil || len(payload) != 8 {
		n.stats.spoofed.Add(1)
		n.log.Debug("mesh: e2e_init failed to authenticate", "from", f.From)
		return
	}
	ts := binary.BigEndian.Uint64(payload)
	msg, recv, send, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return
	}
	s.mu.Lock()
	p := s.peerLocked(f.From)
	if string(p.lastStatic) == string(static) && ts <= p.lastTS {
		s.mu.Unlock()
		n.stats.spoofed.Add(1)
		n.log.Debug("mesh: replayed e2e_init dropped", "from", f.From)
		return
	}
	p.lastStatic, p.lastTS = static, ts
	ss := &session{peer: f.From, static: static, local: s.newIndexLocked(), remote: theirs, send: send.Cipher(), recv: recv.Cipher()}
	s.addLocked(p, ss)
	s.mu.Unlock()
	body := binary.BigEndian.AppendUint32(nil, ss.local)
	body = binary.BigEndian.AppendUint32(body, theirs)
	body = append(body, msg...)
	go n.sendHandshakeFrame(f.From, typeE2EResp, body)
}

// onResp completes a handshake this node started.
func (s *sessions) onResp(f *Frame) {
	n := s.n
	if len(f.Payload) < 8 {
		return
	}
	theirs := binary.BigEndian.Uint32(f.Payload)
	mine := binary.BigEndian.Uint32(f.Payload[4:])
	s.mu.Lock()
	p := s.peers[f.From]
	if p == nil || p.pending == nil || p.pending.index != mine {
		s.mu.Unlock()
		return
	}
	ph := p.pending
	_, send, recv, err := ph.hs.ReadMessage(nil, f.Payload[8:])
	if err != nil {
		s.mu.Unlock()
		n.stats.spoofed.Add(1)
		n.log.Debug("mesh: e2e_resp failed to authenticate", "from", f.From)
		return
	}
	ss := &session{peer: f.From, static: ph.static, local: ph.index, remote: theirs, send: send.Cipher(), recv: recv.Cipher()}
	p.pending = nil
	ph.timer.Stop()
	s.addLocked(p, ss)
	queued := ph.queued
	ph.queued = nil
	close(ph.done)
	s.mu.Unlock()
	for _, q := range queued {
		n.sendSealed(nil, ss, q.f, q.lane)
	}
}

// sealedAD is the header a seal covers: the routed header as the origin
// wrote it, with the TTL (which relays change) as zero.
func sealedAD(dst []byte, f *Frame) []byte {
	h := *f
	h.TTL = 0
	h.Sealed = true
	h.Payload = nil
	return appendFrame(dst, &h)
}

// seal replaces f's payload with the sealed box.
func (ss *session) seal(f *Frame) {
	ss.sendMu.Lock()
	ctr := ss.sendCtr
	ss.sendCtr++
	ss.sendMu.Unlock()
	f.Sealed = true
	var adBuf [routedHeaderMin + 2*MaxNodeIDLen + extHeaderLen + 2 + traceValueLen]byte
	ad := sealedAD(adBuf[:0], f)
	out := make([]byte, 12, 12+len(f.Payload)+noiseTagLen)
	binary.BigEndian.PutUint32(out, ss.remote)
	binary.BigEndian.PutUint64(out[4:], ctr)
	f.Payload = ss.send.Encrypt(out, ctr, ad, f.Payload)
}

var errSeal = errors.New("sealed frame did not open")

// open checks and opens a sealed frame addressed to this node, replacing
// its payload with the plaintext.
func (s *sessions) open(f *Frame) error {
	if len(f.Payload) < 12+noiseTagLen {
		return errSeal
	}
	idx := binary.BigEndian.Uint32(f.Payload)
	ctr := binary.BigEndian.Uint64(f.Payload[4:])
	s.mu.Lock()
	ss := s.byIndex[idx]
	s.mu.Unlock()
	if ss == nil || ss.peer != f.From {
		return errSeal
	}
	var adBuf [routedHeaderMin + 2*MaxNodeIDLen + extHeaderLen + 2 + traceValueLen]byte
	ad := sealedAD(adBuf[:0], f)
	ss.recvMu.Lock()
	defer ss.recvMu.Unlock()
	if !ss.fresh(ctr) {
		return errSeal
	}
	pt, err := ss.recv.Decrypt(nil, ctr, ad, f.Payload[12:])
	if err != nil {
		return errSeal
	}
	ss.mark(ctr)
	f.Payload = pt
	f.Sealed = false
	return nil
}

// fresh reports whether counter c has not been accepted before and is not
// too old to tell (recvMu held).
func (ss *session) fresh(c uint64) bool {
	if c >= ss.top {
		return true
	}
	// One word less than the bitmap holds, so the word of the oldest
	// counter still accepted is never the word of the newest.
	if ss.top-c > replayWindow-64 {
		return false
	}
	return ss.bitmap[(c/64)%uint64(len(ss.bitmap))]&(1<<(c%64)) == 0
}

// mark records counter c as accepted (recvMu held, after fresh).
func (ss *session) mark(c uint64) {
	const words = uint64(replayWindow / 64)
	if c >= ss.top {
		// Clear the words the window slides past.
		from, to := ss.top/64, c/64
		if to-from >= words {
			clear(ss.bitmap[:])
		} else {
			for w := from + 1; w <= to; w++ {
				ss.bitmap[w%words] = 0
			}
		}
		ss.top = c + 1
	}
	ss.bitmap[(c/64)%words] |= 1 << (c % 64)
}
