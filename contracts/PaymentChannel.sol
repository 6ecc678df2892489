// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// @title ringseed's unidirectional payment channels (issue 17, docs/speed.md §3 v2 and §6)
/// @notice A payer locks a deposit for one payee until an absolute expiry time. The payer pays
/// off-chain with EIP-712 `Voucher`s carrying a *cumulative* amount; the payee claims the latest
/// one whenever it likes (several times if it likes) and receives what it was not yet paid, at
/// most the deposit. After the expiry the payer takes back whatever was not claimed. One
/// deployment serves every payer and payee of one token: the native coin (BTT on BTTC) when the
/// constructor's `token` is address(0), an ERC-20 (such as WBTT) otherwise.
/// @dev Kept free of imports on purpose: every line that guards money is in this file.
contract PaymentChannel {
    /// A channel. Three storage slots: (payer, expiry), (payee), (deposit, claimed).
    struct Channel {
        address payer; // signs the vouchers; gets the remainder back; 0 = no such channel
        uint64 expiry; // unix time (seconds) from which the payer may reclaim
        address payee; // the only account that can claim, and the one vouchers name
        uint128 deposit; // total paid in (open + top-ups), minus what was reclaimed
        uint128 claimed; // cumulative amount paid to the payee so far
    }

    /// address(0) for the chain's native coin, else the ERC-20 every channel is paid in.
    address public immutable token;

    /// Channel ids are chosen by the payer and never reused (a reclaimed channel stays here).
    mapping(bytes32 => Channel) public channels;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    /// What a payer signs for each payment: the channel, who may claim it, the cumulative amount.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channel,address payee,uint256 amount)");
    /// What a payer signs to bid for paid slots (checked by the seeder only, never on chain; here
    /// so that one file defines both typed-data formats).
    bytes32 public constant BID_TYPEHASH =
        keccak256("Bid(bytes32 channel,address payee,uint256 price,uint256 cap)");

    /// secp256k1's group order halved: signatures with a larger `s` are the malleable twins of
    /// valid ones (EIP-2) and are refused.
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    // The domain separator, cached for the chain the contract was deployed on and recomputed if
    // the chain id ever changes (a fork), so vouchers of one chain never pay on another.
    bytes32 private immutable cachedDomainSeparator;
    uint256 private immutable cachedChainId;

    event Opened(bytes32 indexed channel, address indexed payer, address indexed payee, uint256 deposit, uint64 expiry);
    event ToppedUp(bytes32 indexed channel, address indexed from, uint256 amount, uint256 deposit);
    event Claimed(bytes32 indexed channel, address indexed payee, uint256 paid, uint256 claimed);
    event Reclaimed(bytes32 indexed channel, address indexed payer, uint256 amount);

    error ChannelExists();
    error NoSuchChannel();
    error BadPayee();
    error BadExpiry();
    error BadValue();
    error DepositTooLarge();
    error NotPayee();
    error NotPayer();
    error BadSignature();
    error NothingToClaim();
    error NotExpired();
    error Expired();
    error NothingToReclaim();
    error TransferFailed();
    error NotAToken();

    constructor(address token_) {
        // A call to an address without code "succeeds" and returns nothing, which the
        // non-standard-token handling below would take for a successful transfer.
        if (token_ != address(0) && token_.code.length == 0) revert NotAToken();
        token = token_;
        cachedChainId = block.chainid;
        cachedDomainSeparator = _domainSeparator();
    }

    // ------------------------------------------------------------------ the payer's side

    /// Opens channel `id` from msg.sender to `payee` with `amount` locked until `expiry` (an
    /// absolute unix time in seconds, later than the current block's). Native coin: send exactly
    /// `amount` as the call's value. ERC-20: approve this contract for `amount` first.
    function open(bytes32 id, address payee, uint64 expiry, uint256 amount) external payable {
        Channel storage c = channels[id];
        if (c.payer != address(0)) revert ChannelExists();
        if (payee == address(0) || payee == msg.sender) revert BadPayee();
        if (expiry <= block.timestamp) revert BadExpiry();
        if (amount > type(uint128).max) revert DepositTooLarge();
        c.payer = msg.sender;
        c.expiry = expiry;
        c.payee = payee;
        c.deposit = uint128(amount);
        emit Opened(id, msg.sender, payee, amount, expiry);
        _pull(amount);
    }

    /// Adds `amount` to channel `id`'s deposit (anyone may; what is not claimed goes back to the
    /// payer). Only before the expiry: money the payer could take back at once would be no
    /// promise to the payee.
    function topUp(bytes32 id, uint256 amount) external payable {
        Channel storage c = channels[id];
        if (c.payer == address(0)) revert NoSuchChannel();
        if (block.timestamp >= c.expiry) revert Expired();
        uint256 deposit = uint256(c.deposit) + amount;
        if (deposit > type(uint128).max) revert DepositTooLarge();
        c.deposit = uint128(deposit);
        emit ToppedUp(id, msg.sender, amount, deposit);
        _pull(amount);
    }

    /// After the expiry, pays the payer everything not claimed. The payee can still claim until
    /// this happens (its vouchers stay good); afterwards the channel is empty for good (no top-up
    /// after the expiry), and its id stays taken.
    function reclaim(bytes32 id) external {
        Channel storage c = channels[id];
        if (c.payer == address(0)) revert NoSuchChannel();
        if (msg.sender != c.payer) revert NotPayer();
        if (block.timestamp < c.expiry) revert NotExpired();
        uint256 amount = uint256(c.deposit) - c.claimed;
        if (amount == 0) revert NothingToReclaim();
        c.deposit = c.claimed; // effects before the transfer: a re-entrant call finds nothing
        emit Reclaimed(id, msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ the payee's side

    /// Pays the payee `min(amount, deposit) - claimed` for a voucher the payer signed over
    /// `Voucher(channel = id, payee = msg.sender, amount)`. `signature` is `r ‖ s ‖ v` (65
    /// bytes, v = 27 or 28, low s). Reverts `NothingToClaim` if that pays nothing (a replayed,
    /// lower or equal voucher), so a claim never pays twice.
    function claim(bytes32 id, uint256 amount, bytes calldata signature) external {
        Channel storage c = channels[id];
        address payer = c.payer;
        if (payer == address(0)) revert NoSuchChannel();
        if (msg.sender != c.payee) revert NotPayee();
        // The digest names msg.sender (= the payee), this chain and this contract: a voucher for
        // another payee, chain, channel or contract recovers to some other address.
        if (_recover(voucherDigest(id, msg.sender, amount), signature) != payer) revert BadSignature();
        uint256 deposit = c.deposit;
        uint256 total = amount < deposit ? amount : deposit;
        uint256 already = c.claimed;
        if (total <= already) revert NothingToClaim();
        c.claimed = uint128(total); // total <= deposit < 2^128
        emit Claimed(id, msg.sender, total - already, total);
        _send(msg.sender, total - already);
    }

    // ------------------------------------------------------------------ digests

    /// The EIP-712 domain: {name "ringseed", version "1", this chain, this contract}.
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == cachedChainId ? cachedDomainSeparator : _domainSeparator();
    }

    /// The digest a voucher's signature covers (what `eth_signTypedData_v4` signs).
    function voucherDigest(bytes32 id, address payee, uint256 amount) public view returns (bytes32) {
        return _typedDigest(keccak256(abi.encode(VOUCHER_TYPEHASH, id, payee, amount)));
    }

    /// The digest a bid's signature covers (for tools; the contract never checks bids).
    function bidDigest(bytes32 id, address payee, uint256 price, uint256 cap) external view returns (bytes32) {
        return _typedDigest(keccak256(abi.encode(BID_TYPEHASH, id, payee, price, cap)));
    }

    function _domainSeparator() private view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("ringseed"), keccak256("1"), block.chainid, address(this))
        );
    }

    function _typedDigest(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// ecrecover, refusing what it would accept but no wallet produces: a length other than 65,
    /// v other than 27/28 and high s (the malleable twin). Returns 0 for an invalid signature.
    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v != 27 && v != 28) return address(0);
        if (uint256(s) > HALF_ORDER) return address(0);
        return ecrecover(digest, v, r, s);
    }

    // ------------------------------------------------------------------ moving money

    /// Takes `amount` from msg.sender into the contract.
    function _pull(uint256 amount) private {
        if (token == address(0)) {
            if (msg.value != amount) revert BadValue();
        } else {
            if (msg.value != 0) revert BadValue();
            _tokenCall(abi.encodeWithSelector(0x23b872dd, msg.sender, address(this), amount)); // transferFrom
        }
    }

    /// Pays `amount` to `to`. Native coin through `call` (not `transfer`: a contract wallet may
    /// need more than 2300 gas); callers update their state first, so re-entry finds nothing.
    function _send(address to, uint256 amount) private {
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert TransferFailed();
        } else {
            _tokenCall(abi.encodeWithSelector(0xa9059cbb, to, amount)); // transfer
        }
    }

    /// Calls the token and accepts both ERC-20 styles: returning `true`, or returning nothing
    /// (tokens written before the standard fixed the return value); `false` or a revert fails.
    function _tokenCall(bytes memory data) private {
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok || (ret.length != 0 && (ret.length != 32 || abi.decode(ret, (uint256)) != 1))) {
            revert TransferFailed();
        }
    }
}
