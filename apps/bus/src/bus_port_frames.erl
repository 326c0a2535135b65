%% @doc The frames between the node and a port program (native/bus_port,
%% whose module documentation is the reference): `{packet, 4}' frames,
%% integers big-endian, the first byte the frame's kind. Requests carry an
%% Id their reply repeats; replies and failure reasons are in the external
%% term format. Everything here is pure: encoding what the node sends,
%% decoding what a program sends, and nothing a program sends can crash
%% the decoder.
-module(bus_port_frames).

-export([listen/2, credit/1, stop/0, hand_over/0, request/2, decode/1, atoms/0]).

-export_type([request/0, frame/0]).

-define(INFINITY, 16#FFFFFFFF).
-define(UNCHANGED, 16#FFFFFFFF).

-type request() :: {broadcast, binary(), binary(), timeout(), boolean()}
                 | {create, binary(), boolean()}
                 | {create_random, binary()}
                 | {remove, binary()}
                 | {chmod, binary(), non_neg_integer()}
                 | {chown, binary(), non_neg_integer() | undefined, non_neg_integer() | undefined}
                 | {stat, binary()}
                 | info
                 | {forget, binary()}.

-type frame() :: {hello, Version :: non_neg_integer(), OsPid :: non_neg_integer()}
               | listening
               | held
               | {item, bus_backend:item()}
               | {failed, term()}
               | {reply, Id :: non_neg_integer(), term()}
               | {complaint, binary()}
               | {malformed, binary()}.

%% Node to program.

%% Listen on the bus at Path (joining it), with a credit window.
-spec listen(binary(), pos_integer()) -> iodata().
listen(Path, Window) ->
    [<<$L, 0:8, Window:32>>, Path].

%% The node took N more items: the program may send N more.
-spec credit(pos_integer()) -> binary().
credit(N) ->
    <<$C, N:32>>.

%% Leave the bus, then exit.
-spec stop() -> binary().
stop() ->
    <<$S>>.

%% Hand the listener over to a new program: after its next message it
%% stops just before re-arming, holding the writers back, and says `A'.
-spec hand_over() -> binary().
hand_over() ->
    <<$U>>.

-spec request(non_neg_integer(), request()) -> iodata().
request(Id, {broadcast, Path, Message, Timeout, NoWait}) ->
    [<<$Q, Id:32, $b, (timeout(Timeout)):32, (flag(NoWait)):8, (byte_size(Path)):16>>,
     Path, Message];
request(Id, {create, Path, Exclusive}) ->
    [<<$Q, Id:32, $c, (flag(Exclusive)):8>>, Path];
request(Id, {create_random, Dir}) ->
    [<<$Q, Id:32, $r>>, Dir];
request(Id, {remove, Path}) ->
    [<<$Q, Id:32, $x>>, Path];
request(Id, {chmod, Path, Mode}) ->
    [<<$Q, Id:32, $m, Mode:32>>, Path];
request(Id, {chown, Path, Uid, Gid}) ->
    [<<$Q, Id:32, $o, (id(Uid)):32, (id(Gid)):32>>, Path];
request(Id, {stat, Path}) ->
    [<<$Q, Id:32, $s>>, Path];
request(Id, info) ->
    <<$Q, Id:32, $i>>;
request(Id, {forget, Path}) ->
    [<<$Q, Id:32, $f>>, Path].

%% Program to node.

-spec decode(binary()) -> frame().
decode(<<$H, Version:32, OsPid:32>>) -> {hello, Version, OsPid};
decode(<<$J>>) -> listening;
decode(<<$A>>) -> held;
decode(<<$M, Message/binary>>) -> {item, Message};
decode(<<$W, Message/binary>>) -> {item, {own, Message}};
decode(<<$D, N:64>>) when N > 0 -> {item, {dropped, N}};
decode(Frame = <<$F, Reason/binary>>) ->
    case term(Reason) of
        {ok, Term} -> {failed, Term};
        error -> {malformed, Frame}
    end;
decode(Frame = <<$R, Id:32, Reply/binary>>) ->
    case term(Reply) of
        {ok, Term} -> {reply, Id, Term};
        error -> {malformed, Frame}
    end;
decode(<<$E, Text/binary>>) -> {complaint, Text};
decode(Frame) -> {malformed, Frame}.

%% Every atom a program may send: failure reasons, errno names, the keys
%% of stat and info. Listed here, they exist while this module is loaded,
%% so frames are decoded with binary_to_term's `safe' (no new atoms).
-spec atoms() -> [atom()].
atoms() ->
    [ok, error, message_too_long, message_contains_nul, enoent, eexist, eacces, eperm,
     invalid_bus_file, gone, busy, timeout, timeout_after_publish, interrupted, closed,
     os_error, eio, ebadf, enomem, enotdir, eisdir, einval, enfile, emfile, enospc, erofs,
     enametoolong, eloop, edquot,
     keys, file_mode, sem_mode, shm_mode, uid, gid, values, listeners, attached,
     taken, delivered, dropped, queued, held_us].

%% Internal.

term(Bin) ->
    try binary_to_term(Bin, [safe]) of
        Term -> {ok, Term}
    catch
        error:badarg -> error
    end.

timeout(infinity) -> ?INFINITY;
timeout(Ms) -> min(Ms, ?INFINITY - 1).

flag(true) -> 1;
flag(false) -> 0.

id(undefined) -> ?UNCHANGED;
id(N) -> N.
