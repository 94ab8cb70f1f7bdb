/* gRPC over HTTP/2 on a unix socket: nghttp2 parses and frames, protobuf-c's
 * service descriptor names the methods; one epoll loop serves every
 * connection.  Calls are answered synchronously, so a call in flight is one
 * whose request has not fully arrived yet. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <nghttp2/nghttp2.h>

#include "shim.h"

/* grpc-go's default limit on a received message. */
#define MAX_MESSAGE (4u << 20)
#define FRAME_PREFIX 5
#define DRAIN_SECONDS 10

struct rpc_call {
	int32_t stream_id;
	char path[256];
	bool path_too_long, grpc_content_type, compressed_encoding;
	bool answered;
	uint8_t *body;
	size_t body_len;
	size_t declared; /* length from the frame prefix, once known */
	/* reply */
	uint8_t *out;
	size_t out_len, out_cap, out_sent;
	struct status status;
	struct rpc_conn *conn;
};

struct rpc_conn {
	int fd;
	nghttp2_session *h2;
	uint8_t *pending; /* bytes nghttp2 gave us that the socket did not take */
	size_t pending_len, pending_off;
	bool want_out, closed;
	struct rpc_conn *prev, *next;
};

static struct {
	int epfd, listen_fd, signal_fd;
	ProtobufCService *service;
	struct rpc_conn *conns;
	struct rpc_conn *closed; /* freed once the current batch of events is handled */
	bool draining;
} loop;

/* ---- replies ---- */

void rpc_call_fail(struct rpc_call *call, const struct status *st)
{
	if (call->status.code != GRPC_OK)
		return; /* the first failure is the one reported */
	call->status = *st;
	if (call->status.code == GRPC_OK)
		call->status.code = GRPC_UNKNOWN;
	call->out_len = 0;
}

static int reserve(struct rpc_call *call, size_t more)
{
	if (call->out_len + more <= call->out_cap)
		return 0;
	size_t cap = call->out_cap ? call->out_cap : 4096;
	while (cap < call->out_len + more)
		cap *= 2;
	uint8_t *p = realloc(call->out, cap);
	if (!p)
		return -1;
	call->out = p;
	call->out_cap = cap;
	return 0;
}

void rpc_call_reply(struct rpc_call *call, const ProtobufCMessage *msg)
{
	if (call->status.code != GRPC_OK)
		return;
	if (!msg) {
		struct status st;
		status_set(&st, GRPC_INTERNAL, "no reply");
		rpc_call_fail(call, &st);
		return;
	}
	size_t len = protobuf_c_message_get_packed_size(msg);
	if (len > MAX_MESSAGE || reserve(call, FRAME_PREFIX + len) < 0) {
		struct status st;
		status_set(&st, GRPC_RESOURCE_EXHAUSTED, "reply of %zu bytes is too large", len);
		rpc_call_fail(call, &st);
		return;
	}
	uint8_t *p = call->out + call->out_len;
	p[0] = 0;
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
	protobuf_c_message_pack(msg, p + FRAME_PREFIX);
	call->out_len += FRAME_PREFIX + len;
}

/* grpc-message is percent-encoded (gRPC over HTTP/2 spec). */
static void percent_encode(const char *in, char *out, size_t outlen)
{
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < outlen; p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '%')
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, outlen - o, "%%%02X", *p);
	}
	out[o] = '\0';
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

static int submit_status_trailers(nghttp2_session *h2, struct rpc_call *call, bool trailers_only)
{
	char code[16], message[3 * sizeof(call->status.message)];
	snprintf(code, sizeof(code), "%d", (int)call->status.code);
	percent_encode(call->status.message, message, sizeof(message));
	nghttp2_nv only[] = {
		NV(":status", "200"), NV("content-type", "application/grpc"),
		NV("grpc-status", code), NV("grpc-message", message),
	};
	if (trailers_only)
		return nghttp2_submit_response(h2, call->stream_id, only, 4, NULL);
	return nghttp2_submit_trailer(h2, call->stream_id, only + 2, 2);
}

static ssize_t read_reply(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
			  uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	struct rpc_call *call = source->ptr;
	size_t n = call->out_len - call->out_sent;
	if (n > length)
		n = length;
	memcpy(buf, call->out + call->out_sent, n);
	call->out_sent += n;
	if (call->out_sent == call->out_len) {
		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (submit_status_trailers(h2, call, false) != 0)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

static void answer(nghttp2_session *h2, struct rpc_call *call)
{
	call->answered = true;
	/* no message: an error, or a server stream that found nothing */
	if (call->status.code != GRPC_OK || call->out_len == 0) {
		submit_status_trailers(h2, call, true);
		return;
	}
	nghttp2_nv hdrs[] = { NV(":status", "200"), NV("content-type", "application/grpc") };
	nghttp2_data_provider prd = { .source.ptr = call, .read_callback = read_reply };
	nghttp2_submit_response(h2, call->stream_id, hdrs, 2, &prd);
}

static void answer_http(nghttp2_session *h2, struct rpc_call *call, const char *http_status)
{
	call->answered = true;
	nghttp2_nv hdrs[] = { NV(":status", http_status) };
	nghttp2_submit_response(h2, call->stream_id, hdrs, 1, NULL);
}

static void fail(nghttp2_session *h2, struct rpc_call *call, enum grpc_code code, const char *fmt,
		 const char *arg)
{
	status_set(&call->status, code, fmt, arg);
	call->out_len = 0;
	answer(h2, call);
}

/* ---- a request ---- */

static bool utf8_valid(const unsigned char *p)
{
	while (*p) {
		unsigned char c = *p;
		int n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
		if (n < 0 || (n == 1 && c < 0xc2) || (n == 3 && c > 0xf4))
			return false;
		uint32_t cp = n ? c & (0x3f >> n) : c;
		for (int i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		/* overlong forms, surrogates, beyond U+10FFFF */
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp < 0xe000))
			return false;
		p += n + 1;
	}
	return true;
}

/* Every string field of a message and of the messages inside it, by reflection. */
static bool strings_are_utf8(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		const char *member = (const char *)m + f->offset;
		size_t n = 1;
		void *const *items = (void *const *)member;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			n = *(const size_t *)((const char *)m + f->quantifier_offset);
			items = *(void *const *const *)member;
		}
		for (size_t k = 0; k < n; k++) {
			if (!items[k])
				continue;
			if (f->type == PROTOBUF_C_TYPE_STRING ? !utf8_valid(items[k]) : !strings_are_utf8(items[k]))
				return false;
		}
	}
	return true;
}

static void closure(const ProtobufCMessage *msg, void *closure_data)
{
	rpc_call_reply(closure_data, msg);
}

static void dispatch(nghttp2_session *h2, struct rpc_call *call)
{
	if (!call->grpc_content_type) {
		answer_http(h2, call, "415");
		return;
	}
	const char *service_name = loop.service->descriptor->name;
	size_t sl = strlen(service_name);
	const char *method_name = NULL;
	if (!call->path_too_long && call->path[0] == '/' && strncmp(call->path + 1, service_name, sl) == 0 &&
	    call->path[sl + 1] == '/')
		method_name = call->path + sl + 2;
	const ProtobufCMethodDescriptor *method =
		method_name ? protobuf_c_service_descriptor_get_method_by_name(loop.service->descriptor,
									       method_name)
			    : NULL;
	if (!method) {
		fail(h2, call, GRPC_UNIMPLEMENTED, "unknown method %s", call->path_too_long ? "(too long)" : call->path);
		return;
	}
	if (call->body_len < FRAME_PREFIX) {
		fail(h2, call, GRPC_INTERNAL, "%s: request message missing or truncated", method_name);
		return;
	}
	if (call->body[0] != 0) {
		fail(h2, call, GRPC_UNIMPLEMENTED, "%s: compressed messages are not supported", method_name);
		return;
	}
	if (call->declared > MAX_MESSAGE) {
		fail(h2, call, GRPC_RESOURCE_EXHAUSTED, "%s: request message larger than 4 MiB", method_name);
		return;
	}
	if (call->body_len != FRAME_PREFIX + call->declared) {
		fail(h2, call, GRPC_INTERNAL, "%s: request must be exactly one whole message", method_name);
		return;
	}
	ProtobufCMessage *req = protobuf_c_message_unpack(method->input, NULL, call->declared,
							  call->body + FRAME_PREFIX);
	if (!req) {
		fail(h2, call, GRPC_INTERNAL, "%s: cannot decode the request message", method_name);
		return;
	}
	/* proto3 strings are UTF-8; grpc-go refuses a request that breaks this, and a
	 * name stored otherwise would make every later List undecodable. */
	if (!strings_are_utf8(req)) {
		protobuf_c_message_free_unpacked(req, NULL);
		fail(h2, call, GRPC_INTERNAL, "%s: a string field of the request is not valid UTF-8", method_name);
		return;
	}
	shim_trace("call %s", method_name);
	loop.service->invoke(loop.service, (unsigned)(method - loop.service->descriptor->methods), req,
			     closure, call);
	protobuf_c_message_free_unpacked(req, NULL);
	if (call->status.code != GRPC_OK)
		shim_trace("call %s: status %d %s", method_name, call->status.code, call->status.message);
	answer(h2, call);
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct rpc_call *call = calloc(1, sizeof(*call));
	if (!call)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	call->stream_id = frame->hd.stream_id;
	call->conn = user_data;
	nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, call);
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
	struct rpc_call *call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
	if (!call || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
	if (IS(":path")) {
		if (valuelen >= sizeof(call->path)) {
			call->path_too_long = true;
		} else {
			memcpy(call->path, value, valuelen);
			call->path[valuelen] = '\0';
		}
	} else if (IS("content-type")) {
		static const char grpc[] = "application/grpc";
		call->grpc_content_type = valuelen >= sizeof(grpc) - 1 &&
					  memcmp(value, grpc, sizeof(grpc) - 1) == 0 &&
					  (valuelen == sizeof(grpc) - 1 || value[sizeof(grpc) - 1] == '+' ||
					   value[sizeof(grpc) - 1] == ';');
	}
#undef IS
	return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
			 size_t len, void *user_data)
{
	struct rpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
	if (!call || call->answered)
		return 0;
	/* Keep at most the prefix and one maximal message; the rest only counts. */
	size_t keep = FRAME_PREFIX + MAX_MESSAGE + 1;
	size_t take = 0;
	if (call->body_len < keep)
		take = len < keep - call->body_len ? len : keep - call->body_len;
	if (take) {
		uint8_t *p = realloc(call->body, call->body_len + take);
		if (!p)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		memcpy(p + call->body_len, data, take);
		call->body = p;
	}
	size_t before = call->body_len;
	call->body_len += take;
	if (before < FRAME_PREFIX && call->body_len >= FRAME_PREFIX) {
		const uint8_t *b = call->body;
		call->declared = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
		/* Answer an oversized message at once; the rest of it is only counted. */
		if (call->declared > MAX_MESSAGE)
			fail(h2, call, GRPC_RESOURCE_EXHAUSTED, "%s: request message larger than 4 MiB", call->path);
	}
	if (call->body_len >= keep && !call->answered)
		fail(h2, call, GRPC_INTERNAL, "%s: more than one request message", call->path);
	return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
	if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	struct rpc_call *call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
	if (call && !call->answered)
		dispatch(h2, call);
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *user_data)
{
	struct rpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
	if (!call)
		return 0;
	nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
	free(call->body);
	free(call->out);
	free(call);
	return 0;
}

/* ---- connections ---- */

/* Later events of the same epoll batch may still name C: it is freed after the batch. */
static void conn_close(struct rpc_conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		loop.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	epoll_ctl(loop.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->next = loop.closed;
	loop.closed = c;
}

static void free_closed_conns(void)
{
	while (loop.closed) {
		struct rpc_conn *c = loop.closed;
		loop.closed = c->next;
		nghttp2_session_del(c->h2);
		free(c->pending);
		free(c);
	}
}

static void conn_watch(struct rpc_conn *c, bool out)
{
	if (c->want_out == out)
		return;
	c->want_out = out;
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c };
	epoll_ctl(loop.epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what nghttp2 has queued; false when the connection is finished. */
static bool conn_flush(struct rpc_conn *c)
{
	for (;;) {
		if (c->pending_off < c->pending_len) {
			ssize_t w = send(c->fd, c->pending + c->pending_off, c->pending_len - c->pending_off,
					 MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				conn_watch(c, true);
				return true;
			}
			if (w < 0)
				return false;
			c->pending_off += (size_t)w;
			continue;
		}
		const uint8_t *data;
		ssize_t n = nghttp2_session_mem_send(c->h2, &data);
		if (n < 0)
			return false;
		if (n == 0)
			break;
		uint8_t *p = realloc(c->pending, (size_t)n);
		if (!p)
			return false;
		memcpy(p, data, (size_t)n);
		c->pending = p;
		c->pending_len = (size_t)n;
		c->pending_off = 0;
	}
	conn_watch(c, false);
	return nghttp2_session_want_read(c->h2) || nghttp2_session_want_write(c->h2);
}

static void conn_readable(struct rpc_conn *c)
{
	uint8_t buf[65536];
	for (;;) {
		ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r <= 0) {
			conn_close(c);
			return;
		}
		ssize_t used = nghttp2_session_mem_recv(c->h2, buf, (size_t)r);
		if (used < 0) {
			/* A protocol error ends this connection only; nghttp2 has queued a GOAWAY. */
			shim_trace("connection %d: %s", c->fd, nghttp2_strerror((int)used));
			conn_flush(c);
			conn_close(c);
			return;
		}
		if (!conn_flush(c)) {
			conn_close(c);
			return;
		}
	}
	if (!conn_flush(c))
		conn_close(c);
}

static void conn_accept(void)
{
	for (;;) {
		int fd = accept4(loop.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		struct rpc_conn *c = calloc(1, sizeof(*c));
		nghttp2_session_callbacks *cbs;
		if (!c || nghttp2_session_callbacks_new(&cbs) != 0) {
			free(c);
			close(fd);
			return;
		}
		nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
		nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
		nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
		int rc = nghttp2_session_server_new(&c->h2, cbs, c);
		nghttp2_session_callbacks_del(cbs);
		if (rc != 0) {
			free(c);
			close(fd);
			return;
		}
		nghttp2_settings_entry settings[] = {
			{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 256 },
			{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20 },
		};
		nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings, 2);
		nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16u << 20);
		c->fd = fd;
		c->next = loop.conns;
		if (loop.conns)
			loop.conns->prev = c;
		loop.conns = c;
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		epoll_ctl(loop.epfd, EPOLL_CTL_ADD, fd, &ev);
		if (!conn_flush(c))
			conn_close(c);
	}
}

/* SIGTERM: refuse new connections and streams, finish the ones begun. */
static void start_draining(void)
{
	loop.draining = true;
	epoll_ctl(loop.epfd, EPOLL_CTL_DEL, loop.listen_fd, NULL);
	close(loop.listen_fd);
	loop.listen_fd = -1;
	for (struct rpc_conn *c = loop.conns, *next; c; c = next) {
		next = c->next;
		nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
				      nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR, NULL, 0);
		if (!conn_flush(c))
			conn_close(c);
	}
}

int rpc_serve(int listen_fd, ProtobufCService *service, void (*on_ready)(void))
{
	loop.listen_fd = listen_fd;
	loop.service = service;
	loop.epfd = epoll_create1(EPOLL_CLOEXEC);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	loop.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (loop.epfd < 0 || loop.signal_fd < 0)
		return -errno;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &loop.listen_fd };
	epoll_ctl(loop.epfd, EPOLL_CTL_ADD, listen_fd, &ev);
	ev.data.ptr = &loop.signal_fd;
	epoll_ctl(loop.epfd, EPOLL_CTL_ADD, loop.signal_fd, &ev);
	if (on_ready)
		on_ready();

	time_t drain_deadline = 0;
	for (;;) {
		if (loop.draining) {
			if (!loop.conns || time(NULL) > drain_deadline)
				break;
		}
		struct epoll_event evs[64];
		int n = epoll_wait(loop.epfd, evs, 64, loop.draining ? 200 : -1);
		if (n < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &loop.listen_fd) {
				conn_accept();
			} else if (p == &loop.signal_fd) {
				struct signalfd_siginfo si;
				while (read(loop.signal_fd, &si, sizeof(si)) == sizeof(si))
					;
				if (!loop.draining) {
					shim_log("terminating: finishing calls in flight");
					drain_deadline = time(NULL) + DRAIN_SECONDS;
					start_draining();
				}
			} else {
				struct rpc_conn *c = p;
				if (c->closed)
					continue;
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					conn_readable(c); /* may close c */
				else if (!conn_flush(c))
					conn_close(c);
			}
		}
		free_closed_conns();
	}
	while (loop.conns)
		conn_close(loop.conns);
	free_closed_conns();
	close(loop.epfd);
	close(loop.signal_fd);
	return 0;
}
