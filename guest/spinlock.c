/* Spinlocks shared by VPs: test-and-test-and-set with `pause`, yielding to the
 * hypervisor with LONG_SPIN_WAIT when the holder seems descheduled. */
#include "guest.h"
#include "hypercall.h"

/* About 10 µs of `pause` on current cores before telling the hypervisor we spin. */
#define GUEST_SPIN_BEFORE_YIELD 256u

/* Caveat measured under Unicorn 2.1.1: its TCG translates `xchg`/`lock cmpxchg`
 * without host atomics when an engine is not in parallel mode, so two VPs on two host
 * threads can both take the lock, or a racing release can be lost (the lock then
 * stays taken). Callers keep shared-lock critical paths off hot multi-VP paths. */
void guest_spin_lock(struct guest_spinlock *lock)
{
        uint64_t spins = 0;

        for (;;) {
                if (!lock->locked && !__atomic_exchange_n(&lock->locked, 1, __ATOMIC_ACQUIRE))
                        break;
                while (lock->locked) {
                        __asm__ volatile("pause" ::: "memory");
                        if (++spins % GUEST_SPIN_BEFORE_YIELD == 0)
                                guest_hv_long_spin_wait(spins);
                }
        }
        lock->owner = guest_vp_index() + 1;
}

void guest_spin_unlock(struct guest_spinlock *lock)
{
        GUEST_ASSERT(guest_spin_held(lock));
        lock->owner = 0;
        __atomic_store_n(&lock->locked, 0, __ATOMIC_RELEASE);
}
